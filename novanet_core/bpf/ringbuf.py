"""A BPF ring-buffer consumer that maps the ring itself and reads its records in bulk.

Why not a library: libbpf's ``ring_buffer__consume`` and BCC's ``open_ring_buffer`` call back once
per record (a C→Python call and a decode per event, the cost docs/benchmarks.md measures), and
neither exposes the mapped data for a bulk read. So this module follows the kernel's protocol
itself (kernel/bpf/ringbuf.c, ``struct bpf_ringbuf``; include/uapi/linux/bpf.h,
``struct bpf_ringbuf_hdr``, ``BPF_RINGBUF_BUSY_BIT``/``BPF_RINGBUF_DISCARD_BIT``):

* page 0 of the map's mmap holds ``consumer_pos`` (the only page user space may write), page 1
  ``producer_pos``; the data pages follow and are mapped twice back to back, so a record that
  wraps past the end of the ring is still contiguous in the mapping;
* each record is an 8-byte header (``u32 len; u32 pg_off``) and ``len`` bytes of data, the whole
  rounded up to 8 bytes; ``len`` carries BUSY while the program has reserved but not yet
  submitted the record and DISCARD if it gave it up; records are released in order by advancing
  ``consumer_pos`` past them, so the reader stops at the first BUSY record;
* positions only grow; ``pos & (size - 1)`` is the offset in the ring.

The bulk read (:meth:`RingBuffer.drain_fixed`) checks the ``len`` words of a whole run of
records at once (a strided memoryview, one bytes comparison) and decodes the run with one
``Struct.iter_unpack``, instead of a header test and an unpack call per record. Reading every
header before the data relies on loads not being reordered with older loads (x86-64; the
kernel's release store on BUSY is then enough). ``consumer_pos`` MUST be written with a single
8-byte store (``ctypes.c_uint64``): ``struct.pack_into`` writes byte by byte, the kernel can read
a torn value, think the ring is full and fail ``bpf_ringbuf_reserve`` (seen as spurious losses).
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
_HDR_SIZE = 8


def _slot(length: int) -> int:
    """Bytes a record of ``length`` data bytes takes in the ring (kernel: header + data, 8-aligned)."""
    return (length + _HDR_SIZE + 7) & ~7


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
        self._words = self._data.cast("I")  # for the strided read of record headers
        self.skipped = 0  # committed records of another size than drain_fixed expects (counted, not read)
        self._fixed: dict[int, tuple[struct.Struct, int, memoryview]] = {}
        self._ep = select.epoll()
        self._ep.register(self.fd, select.EPOLLIN)

    def wait(self, timeout: float) -> None:
        """Block until the kernel signals new data (or timeout)."""
        self._ep.poll(timeout)

    @property
    def consumer_pos(self) -> int:
        return int(self._cpos.value)

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

    def drain_fixed(self, event: struct.Struct, out: list[tuple[Any, ...]], max_records: int = 1 << 20) -> int:
        """Decode committed records of ``event.size`` bytes into ``out`` as ``event`` tuples, in runs;
        return records consumed. Discarded records are skipped; a committed record of another size
        is skipped and counted in :attr:`skipped`."""
        rec, slot, expect = self._fixed.get(event.size) or self._fixed_layout(event)
        words = slot >> 2
        cons = start = self._cpos.value
        prod = self._ppos.value
        data, mask, n = self._data, self._mask, 0
        while cons < prod and n < max_records:
            off = cons & mask
            run = min((prod - cons) // slot, max_records - n, len(expect) >> 2)
            if run:
                w = off >> 2
                lens = self._words[w:w + run * words:words].tobytes()
                if lens != expect[:len(lens)]:
                    run = _common_prefix(lens, expect[:len(lens)].tobytes()) >> 2  # up to the first record that is not plain
            if run:
                out.extend(rec.iter_unpack(data[off:off + run * slot]))
                cons += run * slot
                n += run
                continue
            h = _HDR.unpack_from(data, off)[0]
            if h & _BUSY_BIT:  # reserved, not yet submitted: nothing after it may be released yet
                break
            if not h & _DISCARD_BIT:
                self.skipped += 1
            cons += _slot(h & _LEN_MASK)
        if cons != start:
            self._cpos.value = cons  # one aligned 8-byte store per drain (see module docstring)
        return n

    def _fixed_layout(self, event: struct.Struct) -> tuple[struct.Struct, int, memoryview]:
        fmt = event.format
        order, body = (fmt[0], fmt[1:]) if fmt[:1] in "@=<>!" else ("@", fmt)
        slot = _slot(event.size)
        rec = struct.Struct(f"{order}{_HDR_SIZE}x{body}{slot - _HDR_SIZE - event.size}x")
        # the len word of a submitted, kept record of this size, for as many records as the ring holds
        expect = memoryview(_HDR.pack(event.size) * (self.size // slot))
        self._fixed[event.size] = (rec, slot, expect)
        return rec, slot, expect

    def close(self) -> None:
        if self.fd < 0:
            return
        self._ep.close()
        for _rec, _slot_size, expect in self._fixed.values():
            expect.release()
        self._words.release()
        self._data.release()
        _libc.munmap(self._cons_addr, self._pg)
        _libc.munmap(self._prod_addr, self._pg + 2 * self.size)
        os.close(self.fd)
        self.fd = -1


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix of ``a`` and ``b`` (4-byte granular is enough for the caller),
    by bisection over slice comparisons so that it stays in C."""
    lo, hi = 0, min(len(a), len(b)) >> 2
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if a[:mid << 2] == b[:mid << 2]:
            lo = mid
        else:
            hi = mid - 1
    return lo << 2
