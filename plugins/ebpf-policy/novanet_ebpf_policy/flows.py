"""Flow events: the ring-buffer consumer thread, a bounded history, filters and fan-out to followers.

The consumer only decodes records into tuples, appends them to the history and hands each batch
(one list, shared) to every follower's queue; filtering and turning tuples into dicts happen on
the follower's side, so a slow ``flows -f`` or exporter costs the consumer one ``put`` per batch
and never stalls the ring. Every event the consumer could not hand to a follower is counted.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from novanet_core.bpf.ringbuf import RingBuffer
from novanet_core.protocols import protocol_name
from novanet_ebpf_policy.flowfilter import (
    F_BYTES,
    F_DPORT,
    F_DST_ID,
    F_DST_IP,
    F_FAMILY,
    F_HOOK,
    F_PACKETS,
    F_POLICY_DIR,
    F_POLICY_SET,
    F_PROTO,
    F_REASON,
    F_SPORT,
    F_SRC_ID,
    F_SRC_IP,
    F_TCP_FLAGS,
    F_TS,
    F_VERDICT,
    FlowFilter,
    Names,
    tcp_flag_names,
)
from novanet_ebpf_policy.layouts import DropReason, Hook, Verdict

log = logging.getLogger(__name__)

# Mirrors layouts.FlowEvent (test_layouts checks the two agree field by field). EVENT skips the
# policy fields; EVENT_POLICY, which the consumer decodes, reads them too.
EVENT = struct.Struct("=BBBBIIBBHH2x16s16s4xQQQ")
EVENT_POLICY = struct.Struct("=BBBBIIBBHHBx16s16sIQQQ")
assert EVENT.size == EVENT_POLICY.size == 80
assert F_TS == 16 and F_FAMILY == 0  # flowfilter's tuple positions are EVENT_POLICY's

POLICY_DIRS = {0: "", 1: "egress", 2: "ingress", 3: "default"}
# (policy_dir, src_ip, dst_ip) -> (sentence, policies): names the policy behind a POLICY_DENIED drop
Explainer = Callable[[int, str, str], tuple[str, list[str]]]

# Where the event was seen, relative to the pod (Hubble's traffic_direction): the from-pod program
# sees a pod's egress, the to-pod program a pod's ingress.
DIRECTIONS = {0: "egress", 1: "ingress"}
DEFAULT_HISTORY = 65536
FOLLOWER_QUEUE_BATCHES = 1024

Batch = list[tuple[Any, ...]]


def reason_name(code: int) -> str:
    if code == 0:
        return "-"
    try:
        return DropReason(code).name
    except ValueError:
        return f"UNKNOWN({code})"


def _mono_to_wall() -> float:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC
    return time.time() - time.monotonic()


def to_dict(t: tuple[Any, ...], wall_offset: float, explain: Explainer | None = None, names: Names | None = None,
            node: str = "") -> dict[str, Any]:
    verdict = Verdict(t[F_VERDICT]).name if t[F_VERDICT] in (1, 2) else str(t[F_VERDICT])
    src, dst = t[F_SRC_IP], t[F_DST_IP]
    d = {
        "timestamp": t[F_TS] / 1e9 + wall_offset,
        "timestamp_ns": t[F_TS],
        "node": node,
        "src_ip": str(ipaddress.IPv4Address(src[:4])),
        "dst_ip": str(ipaddress.IPv4Address(dst[:4])),
        "src_pod": names.get(src, "") if names is not None else "",
        "dst_pod": names.get(dst, "") if names is not None else "",
        "src_identity": t[F_SRC_ID],
        "dst_identity": t[F_DST_ID],
        "protocol": t[F_PROTO],
        "protocol_name": protocol_name(t[F_PROTO]),
        "src_port": t[F_SPORT],
        "dst_port": t[F_DPORT],
        "verdict": verdict,
        "drop_reason": t[F_REASON],
        "drop_reason_name": reason_name(t[F_REASON]),
        "tcp_flags": t[F_TCP_FLAGS],
        "tcp_flags_names": tcp_flag_names(t[F_TCP_FLAGS]) if t[F_PROTO] == 6 else [],
        "bytes": t[F_BYTES],
        "packets": t[F_PACKETS],
        "hook": Hook(t[F_HOOK]).name.lower() if t[F_HOOK] in (0, 1) else str(t[F_HOOK]),
        "direction": DIRECTIONS.get(t[F_HOOK], ""),
        "policy_dir": POLICY_DIRS.get(t[F_POLICY_DIR], str(t[F_POLICY_DIR])),
        "policy_set": t[F_POLICY_SET],
    }
    if t[F_REASON] == DropReason.POLICY_DENIED:
        why, pols = explain(t[F_POLICY_DIR], d["src_ip"], d["dst_ip"]) if explain else ("", [])
        d["policy_reason"] = why or "no policy allowed it"
        d["policies"] = pols
    elif t[F_REASON] == DropReason.POLICY_DENY_RULE:
        d["policy_reason"] = "explicit deny entry (policies or egress map)"
        d["policies"] = []
    return d


def matches(t: tuple[Any, ...], identity: int, drops_only: bool) -> bool:
    """The original filter (``--identity``, drops only); FlowFilter is the full one."""
    if drops_only and t[F_VERDICT] != Verdict.DENY:
        return False
    return not identity or t[F_SRC_ID] == identity or t[F_DST_ID] == identity


class FlowCollector:
    """Consumes the pinned ``flows`` ring buffer in one thread; keeps the last ``history`` events."""

    def __init__(self, history: int = DEFAULT_HISTORY, follower_queue: int = FOLLOWER_QUEUE_BATCHES):
        self.history: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=history)
        self.consumed = 0
        self.follower_dropped = 0  # events a full follower queue could not take (counted, not silent)
        self._followers: list[queue.Queue[Batch]] = []
        self._fq = follower_queue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rb: RingBuffer | None = None
        self.wall_offset = _mono_to_wall()
        self.explain: Explainer | None = None  # set by the backend once it holds compiled policy
        self.names: Names = {}  # raw 16-byte address -> "namespace/pod", kept by the backend
        self.node = ""

    def start(self, ringbuf_fd: int) -> None:
        self._rb = RingBuffer(ringbuf_fd)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="novanet-flows", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        if self._rb:
            self._rb.close()
            self._rb = None

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def _run(self) -> None:
        rb = self._rb
        assert rb is not None
        unpack = EVENT_POLICY.unpack_from
        while not self._stop.is_set():
            batch: Batch = []
            try:
                if not rb.pending_bytes():
                    rb.wait(0.2)
                n = rb.drain(unpack, batch, max_records=65536)
            except Exception:  # keep consuming: a decode bug must not stop the datapath's events
                log.exception("flow consumer")
                time.sleep(0.5)
                continue
            if n:
                self._deliver(batch)

    def _deliver(self, batch: Batch) -> None:
        self.consumed += len(batch)
        with self._lock:  # with subscribe(): an event is in a follower's snapshot or its queue, never both
            self.history.extend(batch)
            followers = list(self._followers)
        for q in followers:
            try:
                q.put_nowait(batch)
            except queue.Full:
                self.follower_dropped += len(batch)

    # ------------------------------------------------------------------ followers
    def subscribe(self) -> tuple[queue.Queue[Batch], list[tuple[Any, ...]]]:
        """A queue that receives every batch the consumer reads from now on (``unsubscribe`` it),
        and the history up to that moment."""
        q: queue.Queue[Batch] = queue.Queue(self._fq)
        with self._lock:
            self._followers.append(q)
            snapshot = list(self.history)
        return q, snapshot

    def unsubscribe(self, q: queue.Queue[Batch]) -> None:
        with self._lock:
            if q in self._followers:
                self._followers.remove(q)

    @property
    def followers(self) -> int:
        return len(self._followers)

    def _dict(self, t: tuple[Any, ...]) -> dict[str, Any]:
        return to_dict(t, self.wall_offset, self.explain, self.names, self.node)

    def _filter(self, flt: FlowFilter | None, identity: int, drops_only: bool) -> Callable[[tuple[Any, ...]], bool]:
        flt = flt or FlowFilter()
        if identity or drops_only:
            flt = flt.merged(identity=identity, drops_only=drops_only)
        return flt.compile(self.names, self.wall_offset)

    def recent(self, identity: int = 0, drops_only: bool = False, limit: int = 100,
               flt: FlowFilter | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` events of the history that pass the filter, oldest first."""
        with self._lock:
            snapshot = list(self.history)
        return self._last(snapshot, self._filter(flt, identity, drops_only), limit)

    def _last(self, snapshot: list[tuple[Any, ...]], pred: Callable[[tuple[Any, ...]], bool],
              limit: int) -> list[dict[str, Any]]:
        if not limit:
            return []
        sel: list[tuple[Any, ...]] = []
        for t in reversed(snapshot):  # newest first, so --last N stops early
            if pred(t):
                sel.append(t)
                if len(sel) >= limit:
                    break
        return [self._dict(t) for t in reversed(sel)]

    def follow(self, identity: int = 0, drops_only: bool = False, limit: int = 100,
               stop: threading.Event | None = None, flt: FlowFilter | None = None) -> Iterator[dict[str, Any]]:
        """History (up to ``limit``) then live events until the consumer goes away."""
        q, snapshot = self.subscribe()
        pred = self._filter(flt, identity, drops_only)
        try:
            yield from self._last(snapshot, pred, limit)
            while not self._stop.is_set() and not (stop and stop.is_set()):
                try:
                    batch = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                for t in batch:
                    if pred(t):
                        yield self._dict(t)
        finally:
            self.unsubscribe(q)
