"""Pins deleted under a running dataplane: noticed, repaired, reported.

The dataplane holds an fd of every map, so a map whose pin was removed (``rm`` in bpffs, a
cleanup script, a bpffs remounted over the root) still works for the programs, but the next
dataplane start would not find it and would start empty: the map is pinned again from the fd.
A tcx link is held only by its pin, so removing the pin detaches the program from the pod's veth
at once (its traffic then bypasses policy and the datapath): the link is attached again. Every
repair is logged as a warning and counted in ``ebpf.status`` → ``pins``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from novanet_core.bpf import pinned, syscall
from novanet_ebpf_policy.layouts import MAPS
from novanet_ebpf_policy.periodic import Periodic

log = logging.getLogger(__name__)

REFRESH = 10


class PinWatch(Periodic):
    name = "pin-watch"

    def __init__(self, backend: Any, interval: float = 1.0):
        super().__init__()
        self.be, self.interval = backend, interval
        self.stats: dict[str, Any] = {"checks": 0, "mapsRepinned": 0, "linksReattached": 0, "last": []}
        # The local veths, re-read from the endpoints map every REFRESH checks (a full map walk).
        self._local: set[int] = set()

    def run_once(self) -> list[str]:
        return self.check()

    def check(self) -> list[str]:
        """One pass; returns what was repaired."""
        be = self.be
        repaired: list[str] = []
        with be._lock:
            m = be.maps
            if m is None:
                return repaired
            if not os.path.isdir(be.root):
                # The whole root gone is a teardown (or bpffs unmounted over it) more often than a
                # mistake: say so, and do not recreate pins somewhere nobody will clean up.
                if not self.stats.get("rootMissing"):
                    log.error("bpf root %s is gone: pinned state cannot be repaired until the dataplane "
                              "restarts (it re-creates and re-pins everything)", be.root)
                self.stats["rootMissing"] = True
                return repaired
            self.stats["rootMissing"] = False
            os.makedirs(pinned.map_dir(be.root), exist_ok=True)
            for name, mdef in MAPS.items():
                path = pinned.versioned_path(be.root, mdef.spec)
                if not os.path.exists(path):
                    syscall.obj_pin(m.fds[name], path)
                    pinned.set_alias(be.root, mdef.spec)
                    repaired.append(f"map {name} re-pinned at {path}")
                    self.stats["mapsRepinned"] += 1
            if be.prog is not None and be.attacher is not None and getattr(be.attacher, "mode", "") == "tcx":
                os.makedirs(be.attacher.dir, exist_ok=True)
                if self.stats["checks"] % REFRESH == 0:
                    self._local = be._local_ifindexes()
                for ifindex in sorted(self._local):
                    try:
                        ifname = socket.if_indextoname(ifindex)
                    except OSError:
                        continue  # the veth is gone: the agent's DEL/reconcile removes the endpoint
                    pins = [be.attacher._pin(ifname, d) for d in ("ingress", "egress")]
                    if all(os.path.exists(p) for p in pins):
                        continue
                    # The cached set may predate a delete_endpoint (which detaches first): only a
                    # veth that is still an endpoint gets its links back.
                    self._local = be._local_ifindexes()
                    if ifindex not in self._local:
                        continue
                    be.attacher.attach(ifname, ifindex, be.prog.fds)
                    repaired.append(f"tcx links of {ifname} re-attached")
                    self.stats["linksReattached"] += 1
        self.stats["checks"] += 1
        if repaired:
            for r in repaired:
                log.warning("pins: %s (removed from bpffs while the dataplane was running)", r)
            self.stats["last"] = repaired
        return repaired
