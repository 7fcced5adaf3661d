"""A cache of compiled BPF programs, so that a dataplane start does not run clang for a source it
has compiled before.

BCC compiles the C source (with LLVM, in the helper of :mod:`.compiler`) into instructions whose
map references are the compiling process's map fds; the kernel then verifies and loads them.
The compile is most of a start's cost (measured: the datapath's 6 CPU-s of clang against 3 s of
verifier), and it is the same compile on every start of every node: two nodes' sources differ only
in their bpffs root, which appears in the pinned maps' paths. So after a compile the helper
records, per program, the instructions as BCC handed them to the kernel, which instructions name
which pinned map, and each map's parameters, under a key made of the source (its bpffs root
replaced by a placeholder), the programs asked for, the kernel, the header tree and BCC. A later
load with the same key opens (or creates and pins, exactly as BCC would) those maps under its own
root, writes their fds into the instructions and loads them with bpf(2): the kernel's verifier
checks them as it checks every load, so a cached program is never trusted more than a compiled one.

Programs with a map reference that is not a pinned map of the source (an unpinned map, a map
value address) are not cached. A cached load the kernel refuses, or any unreadable entry, falls
back to the compile, whose error is the one reported; the entry is removed.

The cache is a directory of root-only JSON files (``NOVANET_BPF_CACHE``, default
``/var/cache/novanet/bpf``; ``off`` disables it), written atomically; entries never change once
written, so concurrent dataplanes share it safely.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from novanet_core.bpf import syscall

FORMAT = 1
DEFAULT_DIR = "/var/cache/novanet/bpf"
ROOT = "\0ROOT\0"  # stands for the bpffs root in keys and recorded pin paths
_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: the one instruction that carries a map fd
_PSEUDO_MAP_FD, _PSEUDO_MAP_VALUE = 1, 2
_QUOTED = re.compile(r'"(/[^"\n]+)"')
_KTREE_STAMP = ".novanet-ktree"


def cache_dir() -> str | None:
    d = os.environ.get("NOVANET_BPF_CACHE", DEFAULT_DIR)
    return None if d in ("", "off") else d


def _bcc_version() -> str:
    spec = importlib.util.find_spec("bcc")  # without importing it: that maps LLVM
    if spec is None or spec.origin is None:
        return "none"
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def key(
    source: str, functions: Iterable[str], sock_addr: Mapping[str, int], header_tree: str, bpf_root: str
) -> str:
    try:
        with open(os.path.join(header_tree, _KTREE_STAMP)) as f:
            tree = f.read()
    except OSError:
        tree = header_tree
    h = hashlib.sha256()
    for part in (
        str(FORMAT),
        os.uname().release,
        tree,
        _bcc_version(),
        json.dumps(sorted(functions)),
        json.dumps(sorted(sock_addr.items())),
        source.replace(bpf_root.rstrip("/"), ROOT),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _path(k: str) -> str | None:
    d = cache_dir()
    return os.path.join(d, k[:2], k + ".json") if d else None


# --------------------------------------------------------------------------- recording (helper)


def _is_map(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-map"
    except OSError:
        return False


def _pinned_maps(source: str) -> dict[int, tuple[str, syscall.MapInfo]]:
    """Map id -> (pin path, info) for every quoted path in ``source`` that is a pinned map."""
    out: dict[int, tuple[str, syscall.MapInfo]] = {}
    for path in set(_QUOTED.findall(source)):
        try:
            fd = syscall.obj_get(path)
        except OSError:
            continue
        try:
            if _is_map(fd):
                info = syscall.map_info(fd)
                out[info.id] = (path, info)
        finally:
            os.close(fd)
    return out


def _relocations(
    insns: bytes, pins: Mapping[int, tuple[str, syscall.MapInfo]]
) -> list[tuple[int, str]] | None:
    """(instruction index, pin path) of every map fd in ``insns``; None if one is no pinned map."""
    relocs = []
    i, n = 0, len(insns) // 8
    while i < n:
        code, regs, _off, imm = struct.unpack_from("=BBhi", insns, i * 8)
        if code == _LD_IMM64:
            src = regs >> 4
            if src in (_PSEUDO_MAP_FD, _PSEUDO_MAP_VALUE):
                if src == _PSEUDO_MAP_VALUE or not _is_map(imm):
                    return None
                pin = pins.get(syscall.map_info(imm).id)
                if pin is None:
                    return None
                relocs.append((i, pin[0]))
            i += 2  # the second half of the 16-byte instruction
            continue
        i += 1
    return relocs


def record(
    k: str,
    source: str,
    bpf_root: str,
    programs: Mapping[str, tuple[bytes, int, int, str]],
    license: str,
    kern_version: int,
) -> bool:
    """Store the entry of key ``k``: ``programs`` maps a function name to (instructions as loaded,
    program type, expected attach type, program name). Returns whether it was cacheable and
    written."""
    path = _path(k)
    if path is None:
        return False
    root = bpf_root.rstrip("/")
    pins = _pinned_maps(source)
    maps: dict[str, dict[str, Any]] = {}
    progs: dict[str, dict[str, Any]] = {}
    # Every pinned map of the source, used by these programs or not: BCC creates each declared one,
    # and the dataplane opens them all.
    for pin, info in pins.values():
        maps[pin.replace(root, ROOT, 1)] = {
            "type": info.type,
            "key": info.key_size,
            "value": info.value_size,
            "max": info.max_entries,
            "flags": info.flags,
            "name": info.name,
        }
    for fn, (insns, ptype, attach, name) in programs.items():
        relocs = _relocations(insns, pins)
        if relocs is None:
            return False
        progs[fn] = {
            "insns": base64.b64encode(insns).decode(),
            "type": ptype,
            "attach": attach,
            "name": name,
            "relocs": [(i, p.replace(root, ROOT, 1)) for i, p in relocs],
        }
    entry = {
        "format": FORMAT,
        "license": license,
        "kern_version": kern_version,
        "maps": maps,
        "programs": progs,
    }
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.rename(tmp, path)
    except OSError:
        return False  # a cache that cannot be written costs the next start a compile, nothing else
    return True


# --------------------------------------------------------------------------- loading (caller)


def _open_or_create(path: str, spec: Mapping[str, Any]) -> int | None:
    """The pinned map at ``path`` if it has the recorded parameters (None if it differs), else a
    new one pinned there, as BCC does for a pinned declaration."""
    want = (spec["type"], spec["key"], spec["value"], spec["max"], spec["flags"])
    for _ in range(3):
        try:
            fd = syscall.obj_get(path)
        except FileNotFoundError:
            fd = syscall.map_create(*want, name=spec["name"])
            try:
                syscall.obj_pin(fd, path)
                return fd
            except OSError:  # another loader pinned it first: use theirs
                os.close(fd)
                continue
        info = syscall.map_info(fd)
        if (info.type, info.key_size, info.value_size, info.max_entries, info.flags) == want:
            return fd
        os.close(fd)
        return None
    return None


def load(k: str, bpf_root: str) -> dict[str, int] | None:
    """Program fds (function -> fd) loaded from the entry of key ``k``, or None when there is no
    usable entry (the caller compiles)."""
    path = _path(k)
    if path is None or not os.path.exists(path):
        return None
    map_fds: dict[str, int] = {}
    fds: dict[str, int] = {}
    try:
        with open(path) as f:
            entry = json.load(f)
        if entry.get("format") != FORMAT:
            raise ValueError("format")
        root = bpf_root.rstrip("/")
        for tmpl, spec in entry["maps"].items():
            fd = _open_or_create(tmpl.replace(ROOT, root, 1), spec)
            if fd is None:
                raise ValueError(f"map {tmpl} differs")
            map_fds[tmpl] = fd
        for fn, p in entry["programs"].items():
            insns = bytearray(base64.b64decode(p["insns"]))
            for i, tmpl in p["relocs"]:
                struct.pack_into("=i", insns, i * 8 + 4, map_fds[tmpl])
            fds[fn] = syscall.prog_load(
                p["type"], bytes(insns), entry["license"], entry["kern_version"], p["name"], p["attach"]
            )
        return fds
    except (OSError, ValueError, KeyError, TypeError) as e:
        for fd in fds.values():
            os.close(fd)
        # The kernel refused it or the entry is damaged: the compile decides and reports.
        if not isinstance(e, ValueError) or str(e) == "format":
            with contextlib.suppress(OSError):
                os.unlink(path)
        return None
    finally:
        for fd in map_fds.values():
            os.close(fd)  # the programs hold their maps now
