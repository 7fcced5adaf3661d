"""The agent's record of local endpoints, persisted so that a restarted agent knows its pods.

One JSON file per attachment under ``<stateDir>/endpoints/``, written atomically. The files are
the agent's memory across restarts; the live system (veths, IPAM files, datapath maps) is the
truth they are reconciled against on start.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from novanet_core.types import Endpoint

log = logging.getLogger(__name__)


class EndpointStore:
    def __init__(self, state_dir: str):
        self.dir = Path(state_dir) / "endpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._eps: dict[tuple[str, str], Endpoint] = {}
        for f in self.dir.glob("*.json"):
            try:
                ep = Endpoint.from_dict(json.loads(f.read_text()))
                self._eps[(ep.container_id, ep.ifname)] = ep
            except (ValueError, TypeError) as e:
                log.error("ignoring unreadable endpoint record %s: %s", f, e)

    def _path(self, cid: str, ifname: str) -> Path:
        return self.dir / f"{cid}_{ifname}.json"

    def put(self, ep: Endpoint) -> None:
        with self._lock:
            p = self._path(ep.container_id, ep.ifname)
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(ep.to_dict()))
            os.replace(tmp, p)
            self._eps[(ep.container_id, ep.ifname)] = ep

    def get(self, cid: str, ifname: str) -> Endpoint | None:
        return self._eps.get((cid, ifname))

    def remove(self, cid: str, ifname: str) -> Endpoint | None:
        with self._lock:
            try:
                self._path(cid, ifname).unlink()
            except FileNotFoundError:
                pass
            return self._eps.pop((cid, ifname), None)

    def all(self) -> list[Endpoint]:
        with self._lock:
            return list(self._eps.values())

    def by_pod(self, namespace: str, pod: str) -> list[Endpoint]:
        return [e for e in self.all() if e.namespace == namespace and e.pod == pod]

    def by_ip(self, ip: str) -> Endpoint | None:
        return next((e for e in self.all() if e.ip == ip), None)
