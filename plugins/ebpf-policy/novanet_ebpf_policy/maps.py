"""Pinned maps: the schema guard before BCC reuses a pin, migration, and typed access.

Restart rules: a pin whose kernel info matches the layout is reused as is (entries survive).
A pin with the right path but the wrong schema, or pins of an older layout version, are moved
aside *before* compiling, so BCC creates a fresh map; their convertible entries are then copied
in, the programs are swapped, and only then are the old pins removed (:meth:`Migration.finish`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from novanet_core.bpf import pinned, syscall
from novanet_ebpf_policy.layouts import (
    MAPS,
    TRAFFIC_CODES,
    ConfigKey,
    DropReason,
    EndpointValue,
    FlowStat,
    TrafficCode,
)

log = logging.getLogger(__name__)
_COUNTER = struct.Struct("<QQ")

Converter = Callable[[bytes, bytes], tuple[bytes, bytes] | None]


def _from_original_endpoint(k: bytes, v: bytes) -> tuple[bytes, bytes]:
    """The original NovaNet ENDPOINTS value {ifindex, mac[6], pad[2], identity, node_ip} (20 B).
    host_mac is unknown there: it is left zero until the agent re-upserts the endpoint."""
    ifindex, mac, identity, node_ip = struct.unpack("=I6s2xII", v)
    new = EndpointValue(ifindex=ifindex, identity=identity, node_ip=node_ip)
    ctypes.memmove(new.mac, mac, 6)
    return k, bytes(new)


# Known conversions, keyed by the OLD map's (name, key_size, value_size); anything else falls
# back to pinned.prefix_converter (same key size, value truncated/zero-extended).
MIGRATIONS: dict[tuple[str, int, int], Converter] = {
    ("endpoints", 4, 20): _from_original_endpoint,
}

# Not worth carrying over: events are transient and the LRU refills itself; the egress map of an
# older layout (a hash nothing wrote) has nothing to keep, and the agent's resync rewrites it.
_NO_COPY = {"flows", "egress"}


@dataclass
class MapMigration:
    name: str
    sources: list[pinned.OldPin]
    reason: str
    copied: int = 0
    skipped: int = 0


@dataclass
class Migration:
    root: str
    items: list[MapMigration] = field(default_factory=list)

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"map": m.name, "reason": m.reason, "from": [s.path for s in m.sources],
                 "copied": m.copied, "skipped": m.skipped} for m in self.items]

    def copy(self) -> None:
        """After compile: fill the new maps from the old pins."""
        for m in self.items:
            if m.name in _NO_COPY or not m.sources:
                continue
            spec = MAPS[m.name].spec
            dst_fd = syscall.obj_get(pinned.versioned_path(self.root, spec))
            try:
                src = m.sources[0]
                conv = MIGRATIONS.get((m.name, src.info.key_size, src.info.value_size)) \
                    or pinned.prefix_converter(src.info, spec)
                if conv is None:
                    m.skipped = -1
                    log.warning("map %s: %s cannot be converted (key size %d -> %d); starting empty",
                                m.name, src.path, src.info.key_size, spec.key_size)
                    continue
                sfd = syscall.obj_get(src.path)
                try:
                    if spec.type.startswith("percpu"):
                        if src.info.value_size != spec.value_size:
                            continue  # per-CPU counters of another width: start from zero
                        width = ((spec.value_size + 7) & ~7) * syscall.possible_cpus()
                        info = syscall.MapInfo(src.info.type, src.info.id, src.info.key_size, width,
                                               src.info.max_entries, src.info.flags, src.info.name)
                        m.copied, m.skipped = pinned.copy_entries(sfd, info, dst_fd, lambda k, v: (k, v))
                    else:
                        m.copied, m.skipped = pinned.copy_entries(sfd, src.info, dst_fd, conv)
                finally:
                    os.close(sfd)
                log.info("map %s: migrated %d entries from %s (%d skipped)", m.name, m.copied, src.path, m.skipped)
            finally:
                os.close(dst_fd)

    def finish(self) -> None:
        """After the programs were swapped: nothing references the old maps through us any more."""
        for m in self.items:
            for s in m.sources:
                try:
                    os.unlink(s.path)
                except FileNotFoundError:
                    pass
        for m in MAPS.values():
            pinned.set_alias(self.root, m.spec)


def prepare(root: str) -> Migration:
    """Schema guard, run BEFORE compiling: move aside anything BCC must not reuse."""
    mig = Migration(root)
    for name, m in MAPS.items():
        spec = m.spec
        cur = pinned.versioned_path(root, spec)
        info = pinned.pinned_info(cur)
        reason = ""
        if info is not None and not spec.matches(info):
            aside = f"{cur}_stale{time.time_ns()}"
            fd = syscall.obj_get(cur)
            try:
                syscall.obj_pin(fd, aside)
            finally:
                os.close(fd)
            os.unlink(cur)
            reason = (f"pinned {pinned.describe_info(info)} does not match layout v{spec.version} "
                      f"({spec.describe()})")
            log.warning("map %s: %s; migrating", name, reason)
            info = None
        olds = pinned.old_pins(root, spec)
        if olds:
            if info is not None and not reason:
                reason = "unfinished migration: old pins still present"
            elif not reason:
                reason = f"layout v{olds[0].version} -> v{spec.version}"
            if reason.startswith("pinned"):  # the moved-aside pin is the freshest data
                olds.sort(key=lambda o: "_stale" not in o.path)
            mig.items.append(MapMigration(name, olds, reason))
    return mig


class MapHandles:
    """Typed access to the live pinned maps (fds opened from the pins, not BCC's copies)."""

    def __init__(self, root: str):
        self.root = root
        self.fds: dict[str, int] = {}
        for name, m in MAPS.items():
            self.fds[name] = syscall.obj_get(pinned.versioned_path(root, m.spec))
        self.ncpu = syscall.possible_cpus()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    # generic
    def update(self, name: str, key: ctypes.Structure | bytes, value: ctypes.Structure | bytes) -> None:
        syscall.map_update(self.fds[name], bytes(key), bytes(value))

    def delete(self, name: str, key: ctypes.Structure | bytes) -> bool:
        return syscall.map_delete(self.fds[name], bytes(key))

    def lookup(self, name: str, key: ctypes.Structure | bytes) -> bytes | None:
        return syscall.map_lookup(self.fds[name], bytes(key), MAPS[name].spec.value_size)

    def items(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        s = MAPS[name].spec
        return syscall.map_items(self.fds[name], s.key_size, s.value_size)

    def keys(self, name: str) -> Iterator[bytes]:
        return syscall.map_keys(self.fds[name], MAPS[name].spec.key_size)

    def count(self, name: str) -> int:
        s = MAPS[name].spec
        if s.type in ("hash", "lru_hash"):
            return syscall.map_count(self.fds[name], s.key_size, s.value_size)
        return sum(1 for _ in syscall.map_keys(self.fds[name], s.key_size))

    # config array
    def config_get(self, key: ConfigKey) -> int:
        raw = syscall.map_lookup(self.fds["config"], int(key).to_bytes(4, "little"), 8)
        return int.from_bytes(raw, "little") if raw else 0

    def config_set(self, key: ConfigKey, value: int) -> None:
        syscall.map_update(self.fds["config"], int(key).to_bytes(4, "little"),
                           int(value).to_bytes(8, "little"))

    # per-CPU counters
    def drop_counts(self) -> dict[str, int]:
        out = {}
        for r in DropReason:
            if r is DropReason.NONE:
                continue
            out[r.name] = syscall.percpu_sum_u64(self.fds["drops"], int(r).to_bytes(4, "little"))
        return out

    def counter_sum(self, name: str, slot: int) -> tuple[int, int]:
        """(packets, bytes) of one per-CPU ``nv_counter`` slot, summed over CPUs."""
        raw = syscall.map_lookup(self.fds[name], slot.to_bytes(4, "little"), 16 * self.ncpu)
        if raw is None:
            return 0, 0
        pk = by = 0
        for i in range(self.ncpu):
            a, b = _COUNTER.unpack_from(raw, 16 * i)
            pk, by = pk + a, by + b
        return pk, by

    def traffic(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per direction: forwarded, each drop reason and new flows, as {packets, bytes}."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for hook, direction in ((0, "egress"), (1, "ingress")):
            d: dict[str, dict[str, int]] = {}
            for code, name in [(TrafficCode.FORWARDED, "FORWARDED"), (TrafficCode.NEW_FLOW, "NEW_FLOW")] + \
                    [(int(r), r.name) for r in DropReason if r is not DropReason.NONE]:
                pk, by = self.counter_sum("traffic", hook * TRAFFIC_CODES + int(code))
                d[name] = {"packets": pk, "bytes": by}
            out[direction] = d
        return out

    def flow_stats(self) -> dict[str, int]:
        return {s.name.lower(): syscall.percpu_sum_u64(self.fds["flowstats"], int(s).to_bytes(4, "little"))
                for s in FlowStat}

    def info(self) -> list[dict[str, Any]]:
        out = []
        for name, m in MAPS.items():
            i = syscall.map_info(self.fds[name])
            entries = None if m.spec.type in ("ringbuf", "array", "percpu_array") else self.count(name)
            out.append({"name": name, "pin": os.path.join(self.root, name),
                        "path": pinned.versioned_path(self.root, m.spec), "id": i.id, "type": i.type_name,
                        "key_size": i.key_size, "value_size": i.value_size, "max_entries": i.max_entries,
                        "entries": entries, "version": m.spec.version})
        return out
