"""Flow events: the ring-buffer consumer thread, a bounded history and fan-out to followers."""

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
from novanet_ebpf_policy.layouts import DropReason, Hook, Verdict

log = logging.getLogger(__name__)

# Mirrors layouts.FlowEvent (test_layouts checks the two agree field by field). EVENT skips the
# policy fields; EVENT_POLICY, which the consumer decodes, reads them too.
EVENT = struct.Struct("=BBBBIIBBHH2x16s16s4xQQQ")
EVENT_POLICY = struct.Struct("=BBBBIIBBHHBx16s16sIQQQ")
assert EVENT.size == EVENT_POLICY.size == 80

# Tuple positions in EVENT_POLICY.unpack_from results
(F_FAMILY, F_VERDICT, F_REASON, F_TCP_FLAGS, F_SRC_ID, F_DST_ID, F_PROTO, F_HOOK, F_SPORT, F_DPORT,
 F_POLICY_DIR, F_SRC_IP, F_DST_IP, F_POLICY_SET, F_BYTES, F_PACKETS, F_TS) = range(17)
POLICY_DIRS = {0: "", 1: "egress", 2: "ingress", 3: "default"}
# (policy_dir, src_ip, dst_ip) -> (sentence, policies): names the policy behind a POLICY_DENIED drop
Explainer = Callable[[int, str, str], tuple[str, list[str]]]



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


def to_dict(t: tuple[Any, ...], wall_offset: float, explain: Explainer | None = None) -> dict[str, Any]:
    verdict = Verdict(t[F_VERDICT]).name if t[F_VERDICT] in (1, 2) else str(t[F_VERDICT])
    d = {
        "timestamp": t[F_TS] / 1e9 + wall_offset,
        "timestamp_ns": t[F_TS],
        "src_ip": str(ipaddress.IPv4Address(t[F_SRC_IP][:4])),
        "dst_ip": str(ipaddress.IPv4Address(t[F_DST_IP][:4])),
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
        "bytes": t[F_BYTES],
        "packets": t[F_PACKETS],
        "hook": Hook(t[F_HOOK]).name.lower() if t[F_HOOK] in (0, 1) else str(t[F_HOOK]),
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
    if drops_only and t[F_VERDICT] != Verdict.DENY:
        return False
    return not identity or t[F_SRC_ID] == identity or t[F_DST_ID] == identity


class FlowCollector:
    """Consumes the pinned ``flows`` ring buffer in one thread; keeps the last ``history`` events."""

    def __init__(self, history: int = 4096, follower_queue: int = 8192):
        self.history: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=history)
        self.consumed = 0
        self.follower_dropped = 0
        self._followers: list[queue.Queue[tuple[Any, ...]]] = []
        self._fq = follower_queue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rb: RingBuffer | None = None
        self.wall_offset = _mono_to_wall()
        self.explain: Explainer | None = None  # set by the backend once it holds compiled policy

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

    def _run(self) -> None:
        rb = self._rb
        assert rb is not None
        batch: list[tuple[Any, ...]] = []
        unpack = EVENT_POLICY.unpack_from
        while not self._stop.is_set():
            try:
                if not rb.pending_bytes():
                    rb.wait(0.2)
                n = rb.drain(unpack, batch, max_records=65536)
            except Exception:  # keep consuming: a decode bug must not stop the datapath's events
                log.exception("flow consumer")
                time.sleep(0.5)
                continue
            if not n:
                continue
            self.consumed += n
            self.history.extend(batch)
            with self._lock:
                followers = list(self._followers)
            for q in followers:
                for t in batch:
                    try:
                        q.put_nowait(t)
                    except queue.Full:
                        self.follower_dropped += 1
            batch.clear()

    def recent(self, identity: int = 0, drops_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        snap = list(self.history)
        sel = [t for t in snap if matches(t, identity, drops_only)]
        return [to_dict(t, self.wall_offset, self.explain) for t in sel[-limit:]] if limit else []

    def follow(self, identity: int = 0, drops_only: bool = False, limit: int = 100,
               stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """History (up to ``limit``) then live events until the consumer goes away."""
        q: queue.Queue[tuple[Any, ...]] = queue.Queue(self._fq)
        with self._lock:
            self._followers.append(q)
        try:
            yield from self.recent(identity, drops_only, limit)
            while not self._stop.is_set() and not (stop and stop.is_set()):
                try:
                    t = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if matches(t, identity, drops_only):
                    yield to_dict(t, self.wall_offset, self.explain)
        finally:
            with self._lock:
                self._followers.remove(q)

    @property
    def followers(self) -> int:
        return len(self._followers)

