"""``novanet lab flows``: every node's flow events merged into one stream in time order, as Hubble
Relay merges its agents' streams.

Each node's dataplane is read on its own socket (``dp.flows``, with the same filter). Without
``--follow`` the nodes' recent events are merged and the last N kept. With it, events wait in a
short reorder buffer (``window`` seconds, longer than the nodes' delivery jitter) and leave it in
timestamp order; an event that arrives after a later one already left is printed at once and
counted as late, so the merge never hides an event to keep its order.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths

_END = object()


class Merge:
    def __init__(self, paths: LabPaths, nodes: list[str], params: dict[str, Any]):
        self.paths, self.nodes, self.params = paths, nodes, params
        self.errors: dict[str, str] = {}
        self.late = 0

    def _client(self, node: str) -> ApiClient:
        sock = self.paths.socket(node, "dataplane")
        if not sock.exists():
            raise LabError(f"node {node}: no dataplane socket {sock} (is the lab up?)")
        return ApiClient(str(sock), timeout=None)

    def recent(self, last: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for node in self.nodes:
            try:
                with self._client(node) as c:
                    events += list(c.stream("dp.flows", {**self.params, "follow": False, "limit": last}))
            except (Unreachable, ApiError) as e:
                self.errors[node] = str(e)
        events.sort(key=lambda e: e["timestamp_ns"])
        return events[-last:] if last else []

    def follow(self, last: int, window: float = 0.5, stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        stop = stop or threading.Event()
        q: queue.Queue[Any] = queue.Queue(65536)

        def read(node: str) -> None:
            try:
                with self._client(node) as c:
                    for e in c.stream("dp.flows", {**self.params, "follow": True, "limit": last}):
                        q.put(e)
                        if stop.is_set():
                            break
            except (Unreachable, ApiError, LabError) as e:
                self.errors[node] = str(e)
            finally:
                q.put(_END)

        threads = [threading.Thread(target=read, args=(n,), daemon=True) for n in self.nodes]
        for t in threads:
            t.start()
        heap: list[tuple[int, int, dict[str, Any]]] = []
        seq = itertools.count()
        open_streams, last_out = len(threads), 0
        while open_streams or heap:
            try:
                item = q.get(timeout=0.1)
                if item is _END:
                    open_streams -= 1
                else:
                    heapq.heappush(heap, (item["timestamp_ns"], next(seq), item))
            except queue.Empty:
                pass
            horizon = (time.time() - window) if open_streams else float("inf")
            while heap and heap[0][2]["timestamp"] <= horizon:
                ts, _, e = heapq.heappop(heap)
                if ts < last_out:
                    self.late += 1
                last_out = max(last_out, ts)
                yield e
            if stop.is_set():
                return
