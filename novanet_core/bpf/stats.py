"""Per-program run statistics (``kernel.bpf_stats_enabled``) read from fdinfo, and the per-CPU
event counters programs keep in a ``percpu_array`` (one u64 slot per event)."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from novanet_core.bpf import syscall

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


@dataclass(frozen=True)
class ProgStats:
    prog_id: int
    run_cnt: int
    run_time_ns: int
    verified_insns: int

    @property
    def avg_ns(self) -> float | None:
        return self.run_time_ns / self.run_cnt if self.run_cnt else None

    def to_dict(self) -> dict[str, float | int | None]:
        avg = self.avg_ns
        return {"prog_id": self.prog_id, "run_cnt": self.run_cnt, "run_time_ns": self.run_time_ns,
                "avg_ns": round(avg, 1) if avg is not None else None, "verified_insns": self.verified_insns}


def fdinfo(fd: int, pid: int | str = "self") -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def prog_stats(prog_fd: int) -> ProgStats:
    d = fdinfo(prog_fd)
    return ProgStats(int(d.get("prog_id", 0)), int(d.get("run_cnt", 0)), int(d.get("run_time_ns", 0)),
                     int(d.get("verified_insns", 0)))


def stats_enabled() -> bool:
    try:
        with open(STATS_SYSCTL) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def set_stats_enabled(on: bool) -> bool:
    """Set the global sysctl; returns the previous value so callers can restore it."""
    prev = stats_enabled()
    if os.path.exists(STATS_SYSCTL):
        with open(STATS_SYSCTL, "w") as f:
            f.write("1" if on else "0")
    return prev


def percpu_counters(path: str, events: type[enum.IntEnum]) -> dict[str, int]:
    """``{event name (lower case): sum over CPUs}`` of the per-CPU u64 array pinned at ``path``
    (u32 keys = the enum's values); empty when nothing is pinned there."""
    try:
        fd = syscall.obj_get(path)
    except FileNotFoundError:
        return {}
    try:
        return {e.name.lower(): syscall.percpu_sum_u64(fd, int(e).to_bytes(4, "little")) for e in events}
    finally:
        os.close(fd)
