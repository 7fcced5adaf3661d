"""Flow events: the ring-buffer consumer thread, a bounded history, filters and fan-out to followers.

The consumer only decodes records into tuples, appends them to the history and hands each batch
(one list, shared) to every follower's queue; filtering and turning tuples into dicts happen on
the follower's side, so a slow ``flows -f`` or exporter costs the consumer one ``put`` per batch
and never stalls the ring. Every event the consumer could not hand to a follower is counted.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import operator
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from socket import AF_INET6, inet_ntoa, inet_ntop
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
    Select,
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
DIRECTIONS = {0: "egress", 1: "ingress", 2: "ingress"}  # by hook: the from-network hook delivers to a pod
DEFAULT_HISTORY = 65536
FOLLOWER_QUEUE_BATCHES = 1024
# After a small batch the consumer waits a little before reading again. Whenever it has caught up,
# the program's next bpf_ringbuf_submit finds consumer_pos at its own record and queues a wakeup
# (bpf_ringbuf_commit in kernel/bpf/ringbuf.c); a consumer that takes a handful of records at a time
# makes the producer pay that per handful and pays its own per-batch costs per handful. A 2 ms
# pause (the ring holds ~95 k events) lets a batch build up; events reach followers <= 2 ms later.
SMALL_BATCH = 1024
SMALL_BATCH_PAUSE = 0.002

Batch = list[tuple[Any, ...]]


VERDICT_NAMES = {int(v): v.name for v in Verdict}
HOOK_NAMES = {int(h): h.name.lower() for h in Hook}
_REASONS = {int(r): r.name for r in DropReason}


def event_ip(raw: bytes, family: int) -> str:
    """An event address: IPv4 in the first 4 bytes (family 2), or the whole 16 (family 10)."""
    return inet_ntop(AF_INET6, raw) if family == AF_INET6 else inet_ntoa(raw[:4])


def reason_name(code: int) -> str:
    if code == 0:
        return "-"
    return _REASONS.get(code) or f"UNKNOWN({code})"


def _mono_to_wall() -> float:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC
    return time.time() - time.monotonic()


def to_dict(t: tuple[Any, ...], wall_offset: float, explain: Explainer | None = None, names: Names | None = None,
            node: str = "") -> dict[str, Any]:
    verdict = VERDICT_NAMES.get(t[F_VERDICT]) or str(t[F_VERDICT])
    src, dst = t[F_SRC_IP], t[F_DST_IP]
    d = {
        "timestamp": t[F_TS] / 1e9 + wall_offset,
        "timestamp_ns": t[F_TS],
        "node": node,
        "src_ip": event_ip(src, t[F_FAMILY]),  # (ipaddress is ~10x slower; this runs per exported event)
        "dst_ip": event_ip(dst, t[F_FAMILY]),
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
        "hook": HOOK_NAMES.get(t[F_HOOK]) or str(t[F_HOOK]),
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


# A line is the per-event head (the timestamps) and the rest of the object, which repeats for
# every event of the same flow and outcome (a flood is the same few events over and over): the rest
# is formatted once per distinct event without its timestamp and cached (until a pod name changes). Everything
# derived from small enums (and the node) is one cached tail per combination. Key order differs
# from to_dict's; JSON objects are unordered.
_HEAD = ('{"timestamp":', ',"timestamp_ns":', ",")  # around repr(wall seconds) and repr(ns)
_REST = ('"src_ip":"%s","dst_ip":"%s","src_pod":%s,"dst_pod":%s,"src_identity":%d,"dst_identity":%d,'
         '"protocol":%d,"src_port":%d,"dst_port":%d,"drop_reason":%d,"tcp_flags":%d,"bytes":%d,"packets":%d,'
         '"policy_set":%d,%s}\n')


class _Memo(dict[Any, str]):
    """A cache whose hits are one C-level ``__getitem__`` (usable in ``map``); cleared when full
    (at the default, the line cache holds a few MiB)."""

    def __init__(self, make: Callable[[Any], str], limit: int = 8192):
        super().__init__()
        self.make, self.limit = make, limit

    def __missing__(self, k: Any) -> str:
        if len(self) >= self.limit:
            self.clear()
        v = self[k] = self.make(k)
        return v


_EXPLAINED = frozenset({DropReason.POLICY_DENIED, DropReason.POLICY_DENY_RULE})
_TAIL_KEY = operator.itemgetter(F_VERDICT, F_REASON, F_PROTO, F_HOOK, F_POLICY_DIR, F_TCP_FLAGS)
_NO_TS = operator.itemgetter(slice(0, F_TS))
assert len(EVENT_POLICY.unpack(bytes(EVENT_POLICY.size))) == F_TS + 1  # the timestamp is the last field
_GET = {f: operator.itemgetter(f) for f in (F_TS, F_REASON)}


class LineEncoder:
    """``json.dumps(to_dict(t)) + "\\n"`` for the export, several times cheaper: per event only the
    timestamps are formatted; the rest of the line comes from a cache (see ``_HEAD``/``_REST``), and
    :meth:`lines` does a whole batch with every per-event step a C-level ``map`` (a Python call
    only on a cache miss), instead of a 25-key dict and a generic encoder per event. Same keys,
    same values (tests/unit/test_flowfilter.py compares them)."""

    def __init__(self, collector: FlowCollector):
        self.c = collector
        self._tail = _Memo(self._tail_of)
        self._ip = _Memo(lambda k: event_ip(*k))  # (raw address, family)
        self._pod = _Memo(json.dumps)
        self._rest = _Memo(self._rest_of)
        self._names_version = -1

    def _tail_of(self, k: tuple[int, ...]) -> str:
        verdict, reason, proto, hook, pdir, flags = k
        d = {"node": self.c.node, "protocol_name": protocol_name(proto),
             "verdict": VERDICT_NAMES.get(verdict) or str(verdict), "drop_reason_name": reason_name(reason),
             "tcp_flags_names": tcp_flag_names(flags) if proto == 6 else [],
             "hook": HOOK_NAMES.get(hook) or str(hook), "direction": DIRECTIONS.get(hook, ""),
             "policy_dir": POLICY_DIRS.get(pdir, str(pdir))}
        return json.dumps(d, separators=(",", ":"))[1:-1]

    def _rest_of(self, t: tuple[Any, ...]) -> str:
        names = self.c.names
        return _REST % (self._ip[t[F_SRC_IP], t[F_FAMILY]], self._ip[t[F_DST_IP], t[F_FAMILY]], self._pod[names.get(t[F_SRC_IP], "")],
                        self._pod[names.get(t[F_DST_IP], "")],
                        t[F_SRC_ID], t[F_DST_ID], t[F_PROTO], t[F_SPORT], t[F_DPORT], t[F_REASON], t[F_TCP_FLAGS],
                        t[F_BYTES], t[F_PACKETS], t[F_POLICY_SET], self._tail[_TAIL_KEY(t)])

    def _generic(self, t: tuple[Any, ...]) -> str:
        return json.dumps(self.c._dict(t), separators=(",", ":")) + "\n"

    def line(self, t: tuple[Any, ...]) -> str:
        return self.lines([t])

    def lines(self, batch: list[tuple[Any, ...]]) -> str:
        """The lines of a whole batch, in order."""
        if self._names_version != self.c.names.version:  # cached lines name pods
            self._rest.clear()
            self._names_version = self.c.names.version
        rep = itertools.repeat
        ts = list(map(_GET[F_TS], batch))
        wall = map(operator.add, map(operator.truediv, ts, rep(1e9)), rep(self.c.wall_offset))
        rest = map(self._rest.__getitem__, map(_NO_TS, batch))
        a, b, c = _HEAD
        # one join over the pieces (cheaper than a % format per line and a join of the lines)
        pieces = zip(rep(a), map(repr, wall), rep(b), map(repr, ts), rep(c), rest, strict=False)  # rep() is endless
        explained = list(itertools.compress(range(len(batch)),
                                            map(_EXPLAINED.__contains__, map(_GET[F_REASON], batch))))
        if not explained:
            return "".join(itertools.chain.from_iterable(pieces))
        # policy drops carry a per-event explanation: the generic path for those
        out = list(map("".join, pieces))
        for i in explained:
            out[i] = self._generic(batch[i])
        return "".join(out)


class PodNames(dict[bytes, str]):
    """Raw event address -> "namespace/pod", with a version that every change bumps (so that what
    was derived from the names, the export's cached lines, is dropped when they change)."""

    version = 0

    def __setitem__(self, k: bytes, v: str) -> None:
        self.version += 1
        super().__setitem__(k, v)

    def __delitem__(self, k: bytes) -> None:
        self.version += 1
        super().__delitem__(k)

    def pop(self, k: bytes, *default: Any) -> Any:  # type: ignore[override]
        self.version += 1
        return super().pop(k, *default)

    def update(self, *a: Any, **kw: Any) -> None:  # type: ignore[override]
        self.version += 1
        super().update(*a, **kw)

    def clear(self) -> None:
        self.version += 1
        super().clear()


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
        self.batches = 0  # reads that returned events (consumed / batches: the mean batch)
        self.follower_dropped = 0  # events a full follower queue could not take (counted, not silent)
        self._skipped = 0  # of ring readers already closed
        self._followers: list[queue.Queue[Batch]] = []
        self._fq = follower_queue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rb: RingBuffer | None = None
        self.wall_offset = _mono_to_wall()
        self.explain: Explainer | None = None  # set by the backend once it holds compiled policy
        self.names = PodNames()  # raw 16-byte address -> "namespace/pod", kept by the backend
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
            self._skipped += self._rb.skipped
            self._rb.close()
            self._rb = None

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def _run(self) -> None:
        rb = self._rb
        assert rb is not None
        while not self._stop.is_set():
            batch: Batch = []
            try:
                if not rb.pending_bytes():
                    rb.wait(0.2)
                n = rb.drain_fixed(EVENT_POLICY, batch, max_records=65536)
            except Exception:  # keep consuming: a decode bug must not stop the datapath's events
                log.exception("flow consumer")
                time.sleep(0.5)
                continue
            if n:
                self._deliver(batch)
                self.batches += 1
                if n < SMALL_BATCH:
                    self._stop.wait(SMALL_BATCH_PAUSE)

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

    @property
    def skipped(self) -> int:
        """Committed ring records of an unexpected size, skipped by the reader (a loss, counted)."""
        return self._skipped + (self._rb.skipped if self._rb else 0)

    def _filter(self, flt: FlowFilter | None, identity: int, drops_only: bool) -> Select:
        flt = flt or FlowFilter()
        if identity or drops_only:
            flt = flt.merged(identity=identity, drops_only=drops_only)
        return flt.compile_batch(self.names, self.wall_offset)

    def recent(self, identity: int = 0, drops_only: bool = False, limit: int = 100,
               flt: FlowFilter | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` events of the history that pass the filter, oldest first."""
        with self._lock:
            snapshot = list(self.history)
        return self._last(snapshot, self._filter(flt, identity, drops_only), limit)

    def _last(self, snapshot: list[tuple[Any, ...]], select: Select, limit: int) -> list[dict[str, Any]]:
        if not limit:
            return []
        return [self._dict(t) for t in select(snapshot)[-limit:]]

    def follow(self, identity: int = 0, drops_only: bool = False, limit: int = 100,
               stop: threading.Event | None = None, flt: FlowFilter | None = None) -> Iterator[dict[str, Any]]:
        """History (up to ``limit``) then live events until the consumer goes away."""
        q, snapshot = self.subscribe()
        select = self._filter(flt, identity, drops_only)
        try:
            yield from self._last(snapshot, select, limit)
            while not self._stop.is_set() and not (stop and stop.is_set()):
                try:
                    batch = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                for t in select(batch):
                    yield self._dict(t)
        finally:
            self.unsubscribe(q)
