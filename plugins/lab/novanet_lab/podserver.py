"""The small server every lab pod runs: ``python -m novanet_lab.podserver``.

One process per pod, started inside the pod's netns, serving all its ports from one selector loop:
TCP accepts get ``<ns>/<pod>\\n`` and are closed; UDP datagrams are answered with the same line.
The reply names the pod so a probe can tell it reached the pod it aimed at. Once every socket is
bound it creates ``--ready-file``, which the lab waits for.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
from pathlib import Path


def serve(name: str, tcp_ports: list[int], udp_ports: list[int], ready_file: Path | None) -> None:
    reply = f"{name}\n".encode()
    sel = selectors.DefaultSelector()
    for port in tcp_ports:
        s = _bound(socket.SOCK_STREAM, port)
        s.listen(512)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "tcp")
    for port in udp_ports:
        u = _bound(socket.SOCK_DGRAM, port)
        u.setblocking(False)
        sel.register(u, selectors.EVENT_READ, "udp")
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(ready_file)
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data == "tcp":
                _accept(sock, reply)
            else:
                _echo(sock, reply)


def _bound(kind: int, port: int) -> socket.socket:
    """One socket serving both families (IPv4 as mapped addresses), so a dual-stack pod answers on
    each of its addresses; IPv4 only where the netns has IPv6 disabled."""
    try:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr: tuple[str, int] = ("::", port)
    except OSError:
        s = socket.socket(socket.AF_INET, kind)
        addr = ("0.0.0.0", port)
    if kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
    except OSError:
        if s.family != socket.AF_INET6:
            raise
        s.close()  # IPv6 present but without addresses to bind (disable_ipv6=1): IPv4 only
        s = socket.socket(socket.AF_INET, kind)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
    return s


def _accept(listener: socket.socket, reply: bytes) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        try:
            conn.setblocking(False)
            conn.send(reply)  # a few bytes always fit the fresh socket's send buffer
        except OSError:
            pass
        finally:
            conn.close()


def _echo(sock: socket.socket, reply: bytes) -> None:
    while True:
        try:
            _, peer = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        try:
            sock.sendto(reply, peer)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="novanet_lab.podserver", description=__doc__)
    ap.add_argument("--name", required=True, help="reply text, normally <namespace>/<pod>")
    ap.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    ap.add_argument("--udp", type=int, action="append", default=[], metavar="PORT")
    ap.add_argument("--ready-file", type=Path, default=None)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(args.name, args.tcp, args.udp, args.ready_file)
    except OSError as e:
        print(f"podserver {args.name}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
