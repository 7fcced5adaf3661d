"""Raw ``bpf(2)`` commands through ctypes.

Why not BCC: BCC 0.26 (Debian 12) has no BPF_LINK_CREATE for tcx (attach types 46/47), no
BPF_LINK_UPDATE, and no way to ask a *pinned* map for its key/value sizes before its own
``BPF_TABLE_PINNED`` silently reuses it. Those are a handful of fixed-layout commands, so they
are done here directly; everything else (compiling, loading, map access by name) stays in BCC.
Layouts follow ``include/uapi/linux/bpf.h`` (x86_64 / little-endian, the only target here).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_DETACH = 34

# enum bpf_attach_type
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

# enum bpf_link_type
BPF_LINK_TYPE_TCX = 11

# enum bpf_map_type (the ones NovaNet uses)
MAP_TYPES = {
    "hash": 1, "array": 2, "percpu_hash": 5, "percpu_array": 6, "lru_hash": 9,
    "lpm_trie": 11, "ringbuf": 27,
}
MAP_TYPE_NAMES = {v: k for k, v in MAP_TYPES.items()}

BPF_ANY = 0
BPF_F_REPLACE = 4
BPF_F_BEFORE = 8


class BpfError(OSError):
    """A failed bpf(2) command; ``errno`` is set, the message names the command."""


def bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = _libc.syscall(_NR_BPF, ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if r < 0:
        e = ctypes.get_errno()
        if e == 2:
            raise FileNotFoundError(e, f"bpf(cmd={cmd}): {os.strerror(e)}")
        raise BpfError(e, f"bpf(cmd={cmd}): {os.strerror(e)}")
    return int(r)


def _attr(*parts: bytes, size: int = 128) -> bytes:
    raw = b"".join(parts)
    return raw + bytes(size - len(raw))


# --------------------------------------------------------------------------- pins


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(path.encode())
    bpf(BPF_OBJ_PIN, _attr(struct.pack("=QIIi", ctypes.addressof(p), fd, 0, 0)))


def obj_get(path: str) -> int:
    """Open a pinned object; raises FileNotFoundError when the pin is absent."""
    p = ctypes.create_string_buffer(path.encode())
    return bpf(BPF_OBJ_GET, _attr(struct.pack("=QIIi", ctypes.addressof(p), 0, 0, 0)))


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str

    @property
    def type_name(self) -> str:
        return MAP_TYPE_NAMES.get(self.type, str(self.type))


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    tag: str
    name: str


@dataclass(frozen=True)
class LinkInfo:
    type: int
    id: int
    prog_id: int
    ifindex: int  # tcx only; 0 once the device is gone or the link was detached
    attach_type: int


def _info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    bpf(BPF_OBJ_GET_INFO_BY_FD, _attr(struct.pack("=IIQ", fd, size, ctypes.addressof(info))))
    return info.raw


def map_info(fd: int) -> MapInfo:
    raw = _info(fd, 88)  # struct bpf_map_info: type,id,key_size,value_size,max_entries,map_flags,name[16]
    t, i, ks, vs, me, fl = struct.unpack_from("=6I", raw)
    return MapInfo(t, i, ks, vs, me, fl, raw[24:40].split(b"\0", 1)[0].decode())


def prog_info(fd: int) -> ProgInfo:
    raw = _info(fd, 224)  # struct bpf_prog_info: type,id,tag[8],...,name[16] at offset 64
    t, i = struct.unpack_from("=II", raw)
    return ProgInfo(t, i, raw[8:16].hex(), raw[64:80].split(b"\0", 1)[0].decode())


def link_info(fd: int) -> LinkInfo:
    raw = _info(fd, 64)  # struct bpf_link_info: type,id,prog_id,pad, union{tcx{ifindex,attach_type}}
    typ, lid, prog_id, _pad, ifindex, atype = struct.unpack_from("=6I", raw)
    return LinkInfo(typ, lid, prog_id, ifindex, atype)


def prog_fd_by_id(prog_id: int) -> int:
    return bpf(BPF_PROG_GET_FD_BY_ID, _attr(struct.pack("=III", prog_id, 0, 0)))


# --------------------------------------------------------------------------- tcx links


def tcx_attach(prog_fd: int, ifindex: int, ingress: bool, flags: int = 0, relative_fd: int = 0) -> int:
    """BPF_LINK_CREATE for tcx; returns the link fd (pin it, or it dies with the process)."""
    attach = BPF_TCX_INGRESS if ingress else BPF_TCX_EGRESS
    # link_create: prog_fd, target_ifindex, attach_type, flags, then tcx{relative_fd, expected_revision}
    return bpf(BPF_LINK_CREATE, _attr(struct.pack("=IIIIIIQ", prog_fd, ifindex, attach, flags, relative_fd, 0, 0)))


# --------------------------------------------------------------------------- cgroup links

# enum bpf_attach_type: cgroup sock_addr hooks (socket-level Service translation)
BPF_CGROUP_INET4_CONNECT = 10
BPF_CGROUP_UDP4_SENDMSG = 14
BPF_CGROUP_UDP4_RECVMSG = 19
BPF_CGROUP_INET4_GETPEERNAME = 29
BPF_LINK_TYPE_CGROUP = 3


def cgroup_attach(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
    """BPF_LINK_CREATE on a cgroup v2 directory fd; returns the link fd (pin it, or it dies with
    the process). Links of several owners coexist on one cgroup (no exclusive attach)."""
    return bpf(BPF_LINK_CREATE, _attr(struct.pack("=IIII", prog_fd, cgroup_fd, attach_type, 0)))


@dataclass(frozen=True)
class CgroupLinkInfo:
    id: int
    prog_id: int
    cgroup_id: int  # the inode number of the cgroup's directory in cgroup2fs
    attach_type: int


def cgroup_link_info(fd: int) -> CgroupLinkInfo:
    raw = _info(fd, 64)  # struct bpf_link_info: type,id,prog_id,pad, union{cgroup{cgroup_id u64, attach_type}}
    _typ, lid, prog_id, _pad, cgid, atype = struct.unpack_from("=IIIIQI", raw)
    return CgroupLinkInfo(lid, prog_id, cgid, atype)


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = 0) -> None:
    """Atomically replace the link's program; with ``old_prog_fd`` fails (EPERM) if someone else swapped."""
    flags = BPF_F_REPLACE if old_prog_fd else 0
    bpf(BPF_LINK_UPDATE, _attr(struct.pack("=IIII", link_fd, new_prog_fd, flags, old_prog_fd)))


def link_detach(link_fd: int) -> None:
    bpf(BPF_LINK_DETACH, _attr(struct.pack("=I", link_fd)))


# --------------------------------------------------------------------------- programs


def prog_load(prog_type: int, insns: bytes, license: str, kern_version: int = 0, name: str = "",
              expected_attach_type: int = 0) -> int:
    """BPF_PROG_LOAD of ready instructions (map fds already in them); the verifier runs here. No
    log is asked for: a caller that needs the verifier's reasons compiles through BCC instead."""
    buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size,
    # log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type
    attr = struct.pack("=IIQQIIQII16sII", prog_type, len(insns) // 8, ctypes.addressof(buf),
                       ctypes.addressof(lic), 0, 0, 0, kern_version, 0, name.encode()[:15], 0,
                       expected_attach_type)
    return bpf(BPF_PROG_LOAD, _attr(attr))


# --------------------------------------------------------------------------- maps by fd


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               name: str = "") -> int:
    nm = name.encode()[:15]
    attr = struct.pack("=IIIIIII", map_type, key_size, value_size, max_entries, flags, 0, 0)
    attr += struct.pack("=16s", nm)
    return bpf(BPF_MAP_CREATE, _attr(attr))


def _elem(fd: int, key: ctypes.Array, value: ctypes.Array | None, flags: int = 0) -> bytes:
    return struct.pack("=I4xQQQ", fd, ctypes.addressof(key), ctypes.addressof(value) if value is not None else 0,
                       flags)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Raw value bytes (for per-CPU maps: ``value_size`` must be round8(size) * possible CPUs)."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, _attr(_elem(fd, k, v)))
    except FileNotFoundError:
        return None
    return v.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    bpf(BPF_MAP_UPDATE_ELEM, _attr(_elem(fd, k, v, flags)))


def map_delete(fd: int, key: bytes) -> bool:
    k = ctypes.create_string_buffer(key, len(key))
    try:
        bpf(BPF_MAP_DELETE_ELEM, _attr(_elem(fd, k, None)))
    except FileNotFoundError:
        return False
    return True


def map_keys(fd: int, key_size: int) -> Iterator[bytes]:
    """Iterate keys with BPF_MAP_GET_NEXT_KEY (safe against concurrent deletes: may skip, never loops)."""
    cur = ctypes.create_string_buffer(key_size)
    nxt = ctypes.create_string_buffer(key_size)
    first = True
    seen = 0
    while True:
        attr = struct.pack("=I4xQQ", fd, 0 if first else ctypes.addressof(cur), ctypes.addressof(nxt))
        try:
            bpf(BPF_MAP_GET_NEXT_KEY, _attr(attr))
        except FileNotFoundError:
            return
        first = False
        seen += 1
        if seen > 1 << 24:  # a map is never this large here; guards against a hash that keeps changing
            return
        ctypes.memmove(cur, nxt, key_size)
        yield nxt.raw


def map_count(fd: int, key_size: int, value_size: int, chunk: int = 4096) -> int:
    """Entries in a hash map, read ``chunk`` at a time with BPF_MAP_LOOKUP_BATCH.

    Counting with BPF_MAP_GET_NEXT_KEY is one syscall (and a few Python objects) per entry: a
    status at 30,000 remote pods walked the endpoints map that way. Batches make it a handful of
    calls. Map types without the batch command (LPM tries) are counted by the key walk.
    ``value_size`` is the size as the syscall copies it (per-CPU maps: round8(size) * CPUs).
    """
    keys = ctypes.create_string_buffer(chunk * key_size)
    vals = ctypes.create_string_buffer(chunk * value_size)
    tok_in = ctypes.create_string_buffer(max(8, key_size))  # hash maps: a u32 bucket index
    tok_out = ctypes.create_string_buffer(max(8, key_size))
    total, first = 0, True
    while True:
        attr = ctypes.create_string_buffer(_attr(struct.pack(
            "=QQQQIIQQ", 0 if first else ctypes.addressof(tok_in), ctypes.addressof(tok_out),
            ctypes.addressof(keys), ctypes.addressof(vals), chunk, fd, 0, 0)), 128)
        r = _libc.syscall(_NR_BPF, ctypes.c_int(BPF_MAP_LOOKUP_BATCH), attr, ctypes.c_uint(128))
        err = ctypes.get_errno() if r < 0 else 0
        if r < 0 and err != 2:  # ENOENT: the last batch (its count is still filled in)
            if first and err in (22, 524, 95):  # EINVAL, ENOTSUPP, EOPNOTSUPP: no batch op
                return sum(1 for _ in map_keys(fd, key_size))
            raise BpfError(err, f"bpf(cmd={BPF_MAP_LOOKUP_BATCH}): {os.strerror(err)}")
        total += struct.unpack_from("=I", attr.raw, 32)[0]
        if err == 2:
            return total
        ctypes.memmove(tok_in, tok_out, len(tok_out))
        first = False


def map_items(fd: int, key_size: int, value_size: int) -> Iterator[tuple[bytes, bytes]]:
    for k in list(map_keys(fd, key_size)):
        v = map_lookup(fd, k, value_size)
        if v is not None:
            yield k, v


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU map values have one slot per possible CPU)."""
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def percpu_sum_u64(fd: int, key: bytes) -> int:
    ncpu = possible_cpus()
    raw = map_lookup(fd, key, 8 * ncpu)
    if raw is None:
        return 0
    return sum(struct.unpack_from(f"={ncpu}Q", raw))
