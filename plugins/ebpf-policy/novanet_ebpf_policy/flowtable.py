"""The flow table (``ct`` map): fixed size, fail closed, swept by the dataplane.

Why not an LRU map: an LRU evicts the least recently used entries to make room, so a flood of
new flows from one pod silently evicts the established flows of every other pod, whose next
packets are then decided again as if they were new (and a reply may then be refused as a new
connection). Here the table is a plain hash of ``bpf.flowTableSize`` entries (two per flow, one
per direction): an established flow is never evicted, and a new flow that finds no room is
dropped and counted as ``FLOW_TABLE_FULL`` (never let through untracked). Room comes back when
flows go idle: this sweeper deletes the two entries of a flow once both have been idle for
``bpf.flowIdleTimeoutSeconds`` (the programs refresh an entry's ``last_seen_ns`` at most once a
second while packets use it). The fill level and the sweeps are in ``ebpf.status`` (``flow_table``)
and the dataplane metrics.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import time
from typing import Any

from novanet_core.bpf import syscall
from novanet_ebpf_policy import layouts
from novanet_ebpf_policy.layouts import CtFlag, Flow6Key, FlowKey, FlowState
from novanet_ebpf_policy.periodic import Periodic

log = logging.getLogger(__name__)

# A flow table that is this full is reported as under pressure (status, metrics, log).
PRESSURE = 0.9


TABLES = ("ct", "ct6")  # IPv4 and IPv6 flows: one table per family, the same size and sweeping


def configure_size(entries: int) -> None:
    """Set the flow tables' size before the programs are compiled (one datapath per process)."""
    for name in TABLES:
        m = layouts.MAPS[name]
        if m.spec.max_entries != entries:
            layouts.MAPS[name] = dataclasses.replace(m, spec=dataclasses.replace(m.spec, max_entries=entries))


def reverse(k: FlowKey | Flow6Key) -> FlowKey | Flow6Key:
    return type(k)(src_ip=k.dst_ip, dst_ip=k.src_ip, src_port=k.dst_port, dst_port=k.src_port, protocol=k.protocol)


class Sweeper(Periodic):
    name = "ct-sweeper"

    def __init__(self, fd: int, capacity: int, idle_seconds: float, interval: float | None = None,
                 key: type[FlowKey] | type[Flow6Key] = FlowKey):
        super().__init__()
        self.fd, self.capacity, self.key = fd, capacity, key
        if key is Flow6Key:
            self.name = "ct6-sweeper"
        self.idle_ns = int(idle_seconds * 1e9)
        self.interval = interval if interval is not None else min(max(idle_seconds / 4, 1.0), 30.0)
        self.stats: dict[str, Any] = {"entries": 0, "capacity": capacity, "fill": 0.0, "pressure": False,
                                      "idleTimeoutSeconds": idle_seconds, "sweeps": 0, "deleted": 0,
                                      "lastSweepSeconds": None}
        self._was_pressed = False

    def run_once(self) -> int:
        return self.sweep()

    def sweep(self, now_ns: int | None = None) -> int:
        """Delete the flows idle for longer than the timeout; returns how many entries went."""
        t0 = time.monotonic()
        now = now_ns if now_ns is not None else time.monotonic_ns()  # bpf_ktime_get_ns()'s clock
        ks, vs = ctypes.sizeof(self.key), ctypes.sizeof(FlowState)
        entries: dict[bytes, FlowState] = {}
        for k, v in syscall.map_items(self.fd, ks, vs):
            entries[k] = FlowState.from_buffer_copy(v)
        deleted = 0
        for k, st in entries.items():
            if now - st.last_seen_ns <= self.idle_ns or st.flags & CtFlag.REPLY:
                continue  # a flow is swept from its original-direction entry, both entries at once
            rk = bytes(reverse(self.key.from_buffer_copy(k)))
            rst = entries.get(rk)
            if rst is not None and now - rst.last_seen_ns <= self.idle_ns:
                continue  # replies still flowing (a one-way stream keeps only the other side fresh)
            deleted += syscall.map_delete(self.fd, k)
            if rst is not None:
                deleted += syscall.map_delete(self.fd, rk)
        # Reply entries whose original is gone (a sweep raced a re-creation): idle ones go too.
        for k, st in entries.items():
            if st.flags & CtFlag.REPLY and now - st.last_seen_ns > self.idle_ns:
                rk = bytes(reverse(self.key.from_buffer_copy(k)))
                if rk not in entries:
                    deleted += syscall.map_delete(self.fd, k)
        left = len(entries) - deleted
        fill = left / self.capacity if self.capacity else 0.0
        pressed = fill >= PRESSURE
        if pressed != self._was_pressed:
            (log.warning if pressed else log.info)(
                "flow table %s: %d of %d entries after the sweep (%.0f%%); new flows are dropped as "
                "FLOW_TABLE_FULL once it is full", "under pressure" if pressed else "no longer under pressure",
                left, self.capacity, 100 * fill)
            self._was_pressed = pressed
        self.stats.update(entries=left, fill=round(fill, 4), pressure=pressed, sweeps=self.stats["sweeps"] + 1,
                          deleted=self.stats["deleted"] + deleted, lastSwept=deleted,
                          lastSweepSeconds=round(time.monotonic() - t0, 4))
        return deleted
