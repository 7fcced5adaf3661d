"""Versioned map pins and the schema check BCC does not do.

``BPF_TABLE_PINNED`` reuses whatever map sits at the path: a different key size, a smaller
value, another map type or max_entries are all accepted silently (feasibility report §3.1). So
before BCC sees a path, :func:`inspect` compares the pinned map's kernel info with the layout the
new program expects. Pins are versioned (``maps/<name>_v<N>``) and the guide's plain name
(``<root>/<name>``) is a bpffs symlink to the version in use, so a layout change means a new path,
a copy of the convertible entries, and an atomic switch of programs, never blind reuse.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from novanet_core.bpf import syscall

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapSpec:
    name: str  # the guide's name, e.g. "endpoints"
    type: str  # "hash", "percpu_array", "lru_hash", "ringbuf", ...
    key_size: int
    value_size: int
    max_entries: int
    version: int
    flags: int = 0

    @property
    def type_id(self) -> int:
        return syscall.MAP_TYPES[self.type]

    def matches(self, info: syscall.MapInfo) -> bool:
        return (info.type, info.key_size, info.value_size, info.max_entries, info.flags) == (
            self.type_id, self.key_size, self.value_size, self.max_entries, self.flags)

    def describe(self) -> str:
        return (f"{self.type} key {self.key_size} B value {self.value_size} B max {self.max_entries} "
                f"flags {self.flags:#x}")


def describe_info(info: syscall.MapInfo) -> str:
    return (f"{info.type_name} key {info.key_size} B value {info.value_size} B max {info.max_entries} "
            f"flags {info.flags:#x}")


def map_dir(root: str) -> str:
    return os.path.join(root, "maps")


def versioned_path(root: str, spec: MapSpec) -> str:
    return os.path.join(map_dir(root), f"{spec.name}_v{spec.version}")


def pinned_info(path: str) -> syscall.MapInfo | None:
    """Kernel info of the map pinned at ``path`` (None when no pin)."""
    try:
        fd = syscall.obj_get(path)
    except FileNotFoundError:
        return None
    try:
        return syscall.map_info(fd)
    finally:
        os.close(fd)


def drop_mismatched(root: str, specs: Iterable[MapSpec]) -> list[str]:
    """Unpin every map under ``root`` whose pin has another layout than ``specs`` say, so that BCC
    creates it afresh instead of reusing it blindly. Only for maps whose content is rebuilt anyway
    (counters, per-node state the agent rewrites); maps with state to keep are migrated instead."""
    dropped = []
    for spec in specs:
        path = versioned_path(root, spec)
        info = pinned_info(path)
        if info is not None and not spec.matches(info):
            log.warning("%s is %s, the program wants %s: recreating it", path, describe_info(info), spec.describe())
            os.unlink(path)
            dropped.append(path)
    return dropped


# bpffs reserves names containing "." for the kernel (EPERM), hence "_v<N>" and "_stale<ns>".
_VER = re.compile(r"^(?P<name>[a-z0-9]+(?:_[a-z]+)*)_v(?P<ver>\d+)(?P<stale>_stale\d+)?$")


@dataclass
class OldPin:
    path: str
    version: int
    info: syscall.MapInfo


def old_pins(root: str, spec: MapSpec) -> list[OldPin]:
    """Pins of the same map under other versions (or moved aside), newest first."""
    out: list[OldPin] = []
    d = map_dir(root)
    if not os.path.isdir(d):
        return out
    cur = versioned_path(root, spec)
    for fn in os.listdir(d):
        m = _VER.match(fn)
        p = os.path.join(d, fn)
        if not m or m["name"] != spec.name or p == cur:
            continue
        info = pinned_info(p)
        if info is not None:
            out.append(OldPin(p, int(m["ver"]), info))
    out.sort(key=lambda o: o.version, reverse=True)
    return out


def set_alias(root: str, spec: MapSpec) -> None:
    """Point ``<root>/<name>`` at the current versioned pin (bpffs supports symlinks)."""
    alias = os.path.join(root, spec.name)
    target = os.path.relpath(versioned_path(root, spec), root)
    if os.path.islink(alias) and os.readlink(alias) == target:
        return
    tmp = alias + "_tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, alias)  # rename over the old link: readers never see it missing


Converter = Callable[[bytes, bytes], tuple[bytes, bytes] | None]


def prefix_converter(old: syscall.MapInfo, new: MapSpec) -> Converter | None:
    """Default conversion for append-only layout changes: same key size, value truncated or
    zero-extended. Returns None when the key size differs (nothing can be carried over safely)."""
    if old.key_size != new.key_size:
        return None

    def conv(k: bytes, v: bytes) -> tuple[bytes, bytes]:
        return k, v[: new.value_size].ljust(new.value_size, b"\0")

    return conv


def copy_entries(src_fd: int, src: syscall.MapInfo, dst_fd: int, conv: Converter) -> tuple[int, int]:
    """Copy every entry through ``conv``; returns (copied, skipped)."""
    copied = skipped = 0
    for k, v in syscall.map_items(src_fd, src.key_size, src.value_size):
        kv = conv(k, v)
        if kv is None:
            skipped += 1
            continue
        try:
            syscall.map_update(dst_fd, kv[0], kv[1])
        except OSError as e:
            if e.errno != errno.E2BIG:
                raise
            skipped += 1  # the new map is smaller (a resized table) and full: the rest start over
            continue
        copied += 1
    return copied, skipped
