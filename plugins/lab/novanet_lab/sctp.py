"""SCTP reachability probes without SCTP sockets (this kernel has no SCTP module).

Each probe is a crafted SCTP INIT chunk sent from the source pod through a raw socket of the
target address's family (``IPPROTO_SCTP``, so the kernel adds the IP header and routes it like any
pod packet; SCTP's CRC32c covers no pseudo-header, so one packet serves both families), carrying a
unique initiate tag. Every target pod has a raw ``IPPROTO_SCTP`` socket open for the duration of
the probe round, in its own netns: the kernel hands it every SCTP packet addressed to the pod
(raw delivery happens before the missing protocol handler would answer "protocol unreachable").
A probe is ``allowed`` when its INIT (source IP, destination port, tag) arrived at the target,
``blocked`` when nothing arrived by the timeout. There is no handshake: arrival of the first
packet of the association is exactly what a NetworkPolicy decides.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence

from novanet_lab.netns import setns_thread
from novanet_lab.paths import NETNS_DIR
from novanet_lab.probe import CONFIRM_TIMEOUT, Endpoint, ProbeResult

IPPROTO_SCTP = 132
REASON_ARRIVED = "sctp-init-arrived"
REASON_DROPPED = "sctp-init-not-received"
NOTE = ("SCTP probes: this kernel has no SCTP sockets, so each probe is a crafted SCTP INIT chunk sent "
        "through a raw socket; '.' = the INIT reached a raw-socket receiver in the target pod, "
        "'X' = it did not arrive within the timeout.")


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def init_packet(sport: int, dport: int, tag: int) -> bytes:
    """SCTP common header (verification tag 0, as INIT requires) + one INIT chunk (RFC 9260 3.3.2)."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, tag, 65535, 10, 10, tag)
    hdr = struct.pack("!HHII", sport, dport, 0, 0)
    csum = crc32c(hdr + chunk)
    # the CRC32c is stored little-endian on the wire (RFC 9260 appendix A)
    return struct.pack("!HHI", sport, dport, 0) + struct.pack("<I", csum) + chunk


def parse_init(pkt: bytes) -> tuple[str, int, int] | None:
    """(source IP, destination port, initiate tag) of an IPv4 packet carrying an SCTP INIT."""
    if len(pkt) < 20:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    if pkt[9] != IPPROTO_SCTP:
        return None
    got = _init_of(pkt[ihl:])
    return None if got is None else (socket.inet_ntoa(pkt[12:16]), *got)


def _init_of(sctp: bytes) -> tuple[int, int] | None:
    """(destination port, initiate tag) of an SCTP packet whose first chunk is an INIT."""
    if len(sctp) < 12 + 8 or sctp[12] != 1:
        return None
    _, dport = struct.unpack_from("!HH", sctp, 0)
    (tag,) = struct.unpack_from("!I", sctp, 16)
    return dport, tag


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class _Receiver(threading.Thread):
    def __init__(self, target: Endpoint, ready: threading.Barrier, stop: threading.Event):
        super().__init__(name=f"sctp-rx:{target.key}", daemon=True)
        self.target, self.ready, self.stop = target, ready, stop
        self.seen: set[tuple[str, int, int]] = set()
        self.error = ""

    def run(self) -> None:
        sock = None
        try:
            setns_thread(str(NETNS_DIR / self.target.netns))
            sock = socket.socket(_family(self.target.ip), socket.SOCK_RAW, IPPROTO_SCTP)
            sock.setblocking(False)
        except OSError as e:
            self.error = f"error: receiver: {e}"
        try:
            self.ready.wait()
        except threading.BrokenBarrierError:
            pass
        if sock is None:
            return
        try:
            while not self.stop.is_set():
                r, _, _ = select.select([sock], [], [], 0.02)
                if r:
                    self._drain(sock)
            self._drain(sock)  # what arrived while this thread waited for the GIL still counts
        finally:
            sock.close()

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                pkt, peer = sock.recvfrom(65535)
            except BlockingIOError:
                return
            if sock.family == socket.AF_INET:
                got = parse_init(pkt)
            else:  # an IPv6 raw socket hands over the payload only; the source is the peer address
                init = _init_of(pkt)
                got = None if init is None else (peer[0], *init)
            if got is not None:
                self.seen.add(got)


Plan = list[tuple[Endpoint, Endpoint, int, int, int]]  # src, dst, port, sport, verification tag


def _plan(sources: Sequence[Endpoint], targets: Sequence[Endpoint], ports: Sequence[int]) -> Plan:
    """One INIT per source, port and target, each with its own source port and tag."""
    base = int.from_bytes(os.urandom(4), "big") | 1
    plan: Plan = []
    n = 0
    for s in sources:
        for port in ports:
            for t in targets:
                n += 1
                plan.append((s, t, port, 32768 + n % 28000, ((base + n * 2654435761) & 0xFFFFFFFF) or 1))
    return plan


def _send_inits(sources: Sequence[Endpoint], plan: Plan, timeout: float) -> dict[str, str]:
    """Every source sends its INITs from its own netns (a thread each); the senders that failed."""
    send_errors: dict[str, str] = {}

    def send(src: Endpoint) -> None:
        try:
            setns_thread(str(NETNS_DIR / src.netns))
            mine = [p for p in plan if p[0].key == src.key]
            socks = {fam: socket.socket(fam, socket.SOCK_RAW, IPPROTO_SCTP)
                     for fam in {_family(t.ip) for _, t, *_ in mine}}
            try:
                for attempt in range(3):  # resent in case a first packet met a neighbour resolution
                    for _, t, port, sport, tag in mine:
                        try:
                            socks[_family(t.ip)].sendto(init_packet(sport, port, tag), (t.ip, 0))
                        except OSError:
                            pass  # an unreachable route shows up as "not received"
                    if attempt < 2:
                        time.sleep(timeout / 3)
            finally:
                for sk in socks.values():
                    sk.close()
        except OSError as e:
            send_errors[src.key] = f"error: sender: {e}"

    senders = [threading.Thread(target=send, args=(s,), daemon=True) for s in sources]
    for th in senders:
        th.start()
    for th in senders:
        th.join()
    return send_errors


def probe_sctp(sources: Sequence[Endpoint], targets: Sequence[Endpoint], ports: Sequence[int],
               timeout: float, confirm_timeout: float = CONFIRM_TIMEOUT) -> list[ProbeResult]:
    """INIT from every source to every target on every port; results in source, port, target order.

    Decided as soon as every INIT has arrived; otherwise after ``timeout`` plus, while some are
    still missing, up to ``confirm_timeout`` more (as the TCP/UDP probes' second attempt does).
    """
    stop = threading.Event()
    ready = threading.Barrier(len(targets) + 1)
    receivers = {t.key: _Receiver(t, ready, stop) for t in targets}
    for r in receivers.values():
        r.start()
    ready.wait()  # every target listens before the first INIT leaves
    plan = _plan(sources, targets, ports)
    started = time.monotonic()
    send_errors = _send_inits(sources, plan, timeout)

    def complete() -> bool:
        return all((s.ip, port, tag) in receivers[t.key].seen for s, t, port, _sport, tag in plan)

    end = started + timeout
    while time.monotonic() < end and not complete():
        time.sleep(0.01)
    end = time.monotonic() + confirm_timeout
    while time.monotonic() < end and not complete():
        time.sleep(0.01)
    stop.set()
    for r in receivers.values():
        r.join(timeout=2)
    ms = (time.monotonic() - started) * 1000
    out = []
    for s, t, port, _sport, tag in plan:
        rx = receivers[t.key]
        if s.key in send_errors or rx.error:
            out.append(ProbeResult(s.key, t.key, port, "SCTP", False, send_errors.get(s.key) or rx.error, ms))
            continue
        ok = (s.ip, port, tag) in rx.seen
        out.append(ProbeResult(s.key, t.key, port, "SCTP", ok, REASON_ARRIVED if ok else REASON_DROPPED, ms))
    return out
