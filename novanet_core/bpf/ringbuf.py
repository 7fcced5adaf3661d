"""A BPF ring-buffer consumer that maps the ring itself (pattern (d) of the feasibility report).

BCC's callback consumer makes one C→Python call per event and peaks at ~225 k decoded ev/s here;
reading records straight out of the mapping with a precompiled ``struct.Struct`` and releasing
space once per batch reached ~535 k ev/s. ``consumer_pos`` MUST be written with a single 8-byte
store (``ctypes.c_uint64``): ``struct.pack_into`` writes byte by byte, the kernel can read a torn
value, think the ring is full and fail ``bpf_ringbuf_reserve`` (seen as spurious lost events).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
from collections.abc import Callable
from typing import Any

from novanet_core.bpf import syscall

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

_PROT_READ, _PROT_WRITE, _MAP_SHARED = 1, 2, 1
_BUSY_BIT = 0x80000000
_DISCARD_BIT = 0x40000000
_LEN_MASK = 0x0FFFFFFF
_HDR = struct.Struct("@I")


class RingBuffer:
    """Consumer side of a BPF_MAP_TYPE_RINGBUF given its fd (the fd is dup'ed; close() releases all)."""

    def __init__(self, map_fd: int):
        self.fd = os.dup(map_fd)
        info = syscall.map_info(self.fd)
        if info.type != syscall.MAP_TYPES["ringbuf"]:
            os.close(self.fd)
            raise ValueError(f"map {info.name!r} (id {info.id}) is not a ring buffer (type {info.type})")
        self.size = info.max_entries
        self._mask = self.size - 1
        pg = mmap.PAGESIZE
        self._pg = pg
        cons = _libc.mmap(None, pg, _PROT_READ | _PROT_WRITE, _MAP_SHARED, self.fd, 0)
        # Producer page + data mapped twice back to back by the kernel: a record never wraps.
        prod = _libc.mmap(None, pg + 2 * self.size, _PROT_READ, _MAP_SHARED, self.fd, pg)
        if cons in (None, ctypes.c_void_p(-1).value) or prod in (None, ctypes.c_void_p(-1).value):
            e = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(e, f"mmap ring buffer: {os.strerror(e)}")
        self._cons_addr, self._prod_addr = cons, prod
        self._cpos = ctypes.c_uint64.from_address(cons)
        self._ppos = ctypes.c_uint64.from_address(prod)
        self._data = memoryview((ctypes.c_char * (2 * self.size)).from_address(prod + pg)).cast("B")
        self._ep = select.epoll()
        self._ep.register(self.fd, select.EPOLLIN)

    def wait(self, timeout: float) -> None:
        """Block until the kernel signals new data (or timeout)."""
        self._ep.poll(timeout)

    def pending_bytes(self) -> int:
        return self._ppos.value - self._cpos.value

    def drain(self, decode: Callable[[Any, int], Any], out: list[Any], max_records: int = 1 << 20) -> int:
        """Decode committed records with ``decode(buffer, offset)`` into ``out``; return records consumed."""
        cons = self._cpos.value
        prod = self._ppos.value
        start = cons
        n = 0
        data, mask, hdr = self._data, self._mask, _HDR.unpack_from
        while cons < prod and n < max_records:
            off = cons & mask
            h = hdr(data, off)[0]
            if h & _BUSY_BIT:  # reserved, not yet committed
                break
            if not h & _DISCARD_BIT:
                out.append(decode(data, off + 8))
                n += 1
            cons += ((h & _LEN_MASK) + 8 + 7) & ~7
        if cons != start:
            self._cpos.value = cons  # one aligned 8-byte store per batch (see module docstring)
        return n

    def close(self) -> None:
        if self.fd < 0:
            return
        self._ep.close()
        self._data.release()
        _libc.munmap(self._cons_addr, self._pg)
        _libc.munmap(self._prod_addr, self._pg + 2 * self.size)
        os.close(self.fd)
        self.fd = -1
