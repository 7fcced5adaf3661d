"""Changes to the datapath's entries for pods on other nodes, collected and sent together.

A full sync (agent start, dataplane reconnect) sends them ``SIZE`` at a time with
``dp.remote.batch``: one request per remote pod was 30,000 round trips, each a token of the
dataplane socket's rate limit, for a 1,000-node cluster. ``SIZE`` keeps a request far below
``api.maxRequestBytes`` (an entry is about 130 bytes of JSON). A single pod's change keeps the
single-entry requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Send = Callable[[str, dict[str, Any]], None]


class RemoteBatch:
    SIZE = 2000

    def __init__(self, send: Send) -> None:
        self.send = send
        self.upsert: list[dict[str, Any]] = []
        self.delete: list[str] = []

    def full(self) -> bool:
        return len(self.upsert) + len(self.delete) >= self.SIZE

    def flush(self) -> None:
        if self.upsert or self.delete:
            self.send("dp.remote.batch", {"upsert": self.upsert, "delete": self.delete})
        self.upsert, self.delete = [], []

    def send_single(self) -> None:
        """One pod's change: the single-entry methods, deletes first (one or two requests)."""
        for ip in self.delete:
            self.send("dp.remote.delete", {"ip": ip})
        for rem in self.upsert:
            self.send("dp.remote.upsert", {"remote": rem})
        self.upsert, self.delete = [], []

    def delete_all(self, ips: list[str]) -> None:
        for i in range(0, len(ips), self.SIZE):
            self.delete = ips[i:i + self.SIZE]
            self.flush()
