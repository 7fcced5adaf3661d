"""Running a loaded program in the kernel on a packet of our own (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import ctypes
import socket
import struct

from novanet_core.bpf import syscall

BPF_PROG_TEST_RUN = 10


def udp_packet(src_mac: str, src_ip: str, dst_ip: str, sport: int = 40000, dport: int = 9) -> bytes:
    eth = b"\x02\x00\x00\x00\x00\x01" + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    udp = struct.pack("!HHHH", sport, dport, 8 + 18, 0) + b"x" * 18
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src_ip),
                     socket.inet_aton(dst_ip))
    return eth + ip + udp


def run(prog_fd: int, pkt: bytes, repeat: int) -> None:
    """``repeat`` runs of the program in one bpf(2) call (ctypes drops the GIL meanwhile)."""
    buf = ctypes.create_string_buffer(pkt, len(pkt))
    out = ctypes.create_string_buffer(256)
    attr = struct.pack("=IIIIQQII", prog_fd, 0, len(buf), len(out), ctypes.addressof(buf), ctypes.addressof(out),
                       repeat, 0)
    syscall.bpf(BPF_PROG_TEST_RUN, attr + bytes(80 - len(attr)))
