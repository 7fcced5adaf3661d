"""Reachability probes between lab pods: concurrent, each decided within one timeout.

One thread per source pod moves itself into the pod's netns (setns is per thread, and a socket
keeps the netns it was created in), opens every probe socket at once (non-blocking), and waits on
one selector until each probe is answered or the deadline passes:

- TCP: non-blocking connect, then read the server's reply line (``<ns>/<pod>``); allowed only if
  the reply names the target, so a probe that lands on the wrong pod is not counted as allowed.
- UDP: a connected socket sends a datagram (resent every ``timeout/3`` in case the first was lost
  while neighbours were resolved) and waits for the echo naming the target.

A refused connection (RST / ICMP port unreachable) is decided at once; a dropped packet at the
deadline, confirmed by a second attempt with a longer deadline. Either way ``allowed`` is False
and ``reason`` says which.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from novanet_lab import cgroups
from novanet_lab.netns import setns_thread
from novanet_lab.paths import NETNS_DIR

DEFAULT_TIMEOUT = 0.3
# A probe that timed out is tried once more with this timeout before it counts as blocked.
CONFIRM_TIMEOUT = 0.6
# Above this many open probes a source starts the rest as earlier ones finish (fd limits).
WINDOW = 256


@dataclass(frozen=True)
class Endpoint:
    key: str  # "ns/pod" (or "svc:ns/name" for a Service, "node:<name>", "underlay" as sources)
    ip: str
    netns: str
    # A Service target: the pods whose reply counts as reaching it (its backends).
    accepts: frozenset[str] = frozenset()
    # As a source: the cgroup of its node (novanet_lab.cgroups). The probing thread moves
    # there before it opens sockets, so the node's socket-level Service translation applies.
    cgroup: str = ""


@dataclass
class ProbeResult:
    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool
    reason: str  # connected | echoed | refused | timeout | wrong-pod: ... | error: ...
    ms: float
    backend: str = ""  # a Service probe: the pod that answered
    family: int = 0  # 4 or 6: the family of the target address probed (0: not recorded)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        out: dict[str, object] = {
            "from": d.pop("src"),
            "to": d.pop("dst"),
            "port": d.pop("port"),
            "protocol": d.pop("protocol"),
            "allowed": d.pop("allowed"),
            "reason": d.pop("reason"),
            "ms": round(d.pop("ms"), 2),
        }
        if self.backend:
            out["backend"] = self.backend
        if self.family:
            out["family"] = self.family
        return out


@dataclass
class _Probe:
    dst: Endpoint
    port: int
    protocol: str
    sock: socket.socket | None = None
    started: float = 0.0
    last_send: float = 0.0
    phase: str = "connect"  # connect -> read (TCP); read (UDP)
    buf: bytes = b""
    result: ProbeResult | None = None


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def probe_matrix(
    sources: Sequence[Endpoint],
    targets: Sequence[Endpoint],
    checks: Sequence[tuple[int, str]],
    timeout: float = DEFAULT_TIMEOUT,
    serves: dict[str, set[tuple[int, str]]] | None = None,
    confirm_timeout: float = CONFIRM_TIMEOUT,
) -> list[ProbeResult]:
    """Probe every (source, target, (port, protocol)); results in source, check, target order.

    With ``serves`` (target key -> the ports it declares), a target is probed only on its own
    ports, so that "nothing listens there" is never shown as "blocked".

    A probe that timed out is tried once more, all of them together, with ``confirm_timeout``
    (0: no second attempt). A short first timeout keeps a table of mostly-allowed cells fast,
    and the second attempt keeps a reply that was merely late (a loaded machine, a slow
    neighbour resolution) from being reported as a drop.
    """
    raise_fd_limit()
    cells = {
        s.key: [(d, port, proto) for port, proto in checks for d in targets
                if serves is None or (port, proto) in serves.get(d.key, set())]
        for s in sources
    }
    results = _run(sources, cells, timeout)
    if confirm_timeout > 0:
        again = {k: [i for i, r in enumerate(rs) if r.reason == "timeout"] for k, rs in results.items()}
        again = {k: idx for k, idx in again.items() if idx}
        if again:
            second = _run([s for s in sources if s.key in again],
                          {k: [cells[k][i] for i in idx] for k, idx in again.items()}, confirm_timeout)
            for k, idx in again.items():
                for i, r in zip(idx, second[k], strict=True):
                    first = results[k][i]
                    r.ms += first.ms
                    results[k][i] = r
    return [r for s in sources for r in results[s.key]]


def _run(sources: Sequence[Endpoint], cells: dict[str, list[tuple[Endpoint, int, str]]],
         timeout: float) -> dict[str, list[ProbeResult]]:
    """One thread per source; each source's results in the order of its cells."""
    per_source: dict[str, list[ProbeResult]] = {}
    errors: dict[str, str] = {}

    def run(src: Endpoint) -> None:
        try:
            setns_thread(str(NETNS_DIR / src.netns))
            if src.cgroup:
                cgroups.enter_thread(Path(src.cgroup))
            per_source[src.key] = _probe_from(src, cells[src.key], timeout)
        except Exception as e:  # reported per probe below; one broken pod must not hide the rest
            errors[src.key] = f"error: {type(e).__name__}: {e}"

    threads = [threading.Thread(target=run, args=(s,), name=f"probe:{s.key}", daemon=True) for s in sources]
    with cgroups.probing() if any(s.cgroup for s in sources) else contextlib.nullcontext():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for src in sources:
        if src.key in errors:
            per_source[src.key] = [ProbeResult(src.key, d.key, port, proto, False, errors[src.key], 0.0)
                                   for d, port, proto in cells[src.key]]
    return per_source


def _probe_from(src: Endpoint, cells: Sequence[tuple[Endpoint, int, str]], timeout: float) -> list[ProbeResult]:
    probes = [_Probe(d, port, proto) for d, port, proto in cells]
    sel = selectors.DefaultSelector()
    pending = list(reversed(probes))
    active = 0
    resend = timeout / 3
    while pending or active:
        while pending and active < WINDOW:
            p = pending.pop()
            _start(src, p, sel)
            if p.result is None:
                active += 1
        if not active:
            break
        now = time.monotonic()
        live = [k.data for k in sel.get_map().values()]
        if not live:
            active = 0
            continue
        nearest = min(p.started + timeout for p in live)
        for p in live:
            if p.protocol == "UDP":
                nearest = min(nearest, p.last_send + resend)
        for key, _ in sel.select(max(0.0, nearest - now)):
            p = key.data
            _step(src, p, sel)
            if p.result is not None:
                active -= 1
        now = time.monotonic()
        for k in list(sel.get_map().values()):
            p = k.data
            if now >= p.started + timeout:
                _finish(src, p, sel, False, "timeout")
                active -= 1
            elif p.protocol == "UDP" and now >= p.last_send + resend:
                _udp_send(p)
    sel.close()
    return [p.result for p in probes if p.result is not None]


def _start(src: Endpoint, p: _Probe, sel: selectors.BaseSelector) -> None:
    p.started = time.monotonic()
    kind = socket.SOCK_STREAM if p.protocol == "TCP" else socket.SOCK_DGRAM
    try:
        s = socket.socket(socket.AF_INET6 if ":" in p.dst.ip else socket.AF_INET, kind)
    except OSError as e:
        p.result = ProbeResult(src.key, p.dst.key, p.port, p.protocol, False, f"error: {e}", 0.0)
        return
    s.setblocking(False)
    p.sock = s
    if p.protocol == "TCP":
        rc = s.connect_ex((p.dst.ip, p.port))
        if rc not in (0, errno.EINPROGRESS):
            _finish(src, p, None, False, _reason(rc))
            return
        sel.register(s, selectors.EVENT_WRITE, p)
    else:
        try:
            s.connect((p.dst.ip, p.port))  # connected: ICMP port-unreachable comes back as ECONNREFUSED
        except OSError as e:
            _finish(src, p, None, False, _reason(e.errno or 0))
            return
        p.phase = "read"
        sel.register(s, selectors.EVENT_READ, p)
        _udp_send(p)


def _udp_send(p: _Probe) -> None:
    p.last_send = time.monotonic()
    assert p.sock is not None
    try:
        p.sock.send(b"probe\n")
    except OSError:
        pass  # a queued ICMP error surfaces on the next recv


def _step(src: Endpoint, p: _Probe, sel: selectors.BaseSelector) -> None:
    s = p.sock
    assert s is not None
    if p.phase == "connect":
        rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc != 0:
            _finish(src, p, sel, False, _reason(rc))
            return
        p.phase = "read"
        sel.modify(s, selectors.EVENT_READ, p)
        return
    try:
        data = s.recv(256)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as e:
        if p.protocol == "UDP" and e.errno == errno.ECONNREFUSED:
            _finish(src, p, sel, False, "refused")
        elif p.protocol == "TCP" and e.errno == errno.ECONNRESET and p.buf == b"":
            _finish(src, p, sel, False, "reset")
        else:
            _finish(src, p, sel, False, _reason(e.errno or 0))
        return
    if p.protocol == "UDP":
        backend = _answered_by(p.dst, data)
        if backend is not None:
            _finish(src, p, sel, True, "echoed", backend)
        else:
            _finish(src, p, sel, False, f"wrong-pod: {data[:40].decode(errors='replace').strip()}")
        return
    p.buf += data
    if data and b"\n" not in p.buf:
        return
    backend = _answered_by(p.dst, p.buf)
    if backend is not None:
        _finish(src, p, sel, True, "connected", backend)
    elif not p.buf:
        _finish(src, p, sel, False, "closed-without-reply")
    else:
        _finish(src, p, sel, False, f"wrong-pod: {p.buf[:40].decode(errors='replace').strip()}")


def _answered_by(dst: Endpoint, reply: bytes) -> str | None:
    """Whom the reply line names, if that counts as reaching ``dst`` (a Service: any of its backends)."""
    name = reply.decode(errors="replace").rstrip("\n")
    if not reply.endswith(b"\n") or "\n" in name:
        return None
    if dst.accepts:
        return name if name in dst.accepts else None
    return name if name == dst.key else None


def _finish(src: Endpoint, p: _Probe, sel: selectors.BaseSelector | None, allowed: bool, reason: str,
            backend: str = "") -> None:
    ms = (time.monotonic() - p.started) * 1000
    p.result = ProbeResult(src.key, p.dst.key, p.port, p.protocol, allowed, reason, ms,
                           backend if p.dst.accepts else "")
    if p.sock is not None:
        if sel is not None:
            try:
                sel.unregister(p.sock)
            except (KeyError, ValueError):
                pass
        p.sock.close()
        p.sock = None


def _reason(rc: int) -> str:
    if rc == errno.ECONNREFUSED:
        return "refused"
    if rc in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if rc == errno.ETIMEDOUT:
        return "timeout"
    return f"error: {errno.errorcode.get(rc, rc)}"
