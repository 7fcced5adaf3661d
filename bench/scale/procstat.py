"""What a running daemon costs: resident memory, CPU time, and the BPF map memory under a bpffs root.

Read straight from /proc and from the kernel's own accounting (``memlock`` in a map's fdinfo), so
the figures are the kernel's, not an estimate of ours.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from novanet_core.bpf import stats, syscall

_TICK = os.sysconf("SC_CLK_TCK")
_DAEMONS = ("novanet-agent", "novanet-dataplane")


def daemon_pid(popen: subprocess.Popen) -> int:  # type: ignore[type-arg]
    """The daemon behind a ``nsenter ... novanet-X`` Popen: nsenter execs it for a net-only
    switch, but look at the children as well in case a future nsenter forks."""
    def is_daemon(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except FileNotFoundError:
            return False
        return any(os.path.basename(a.decode(errors="replace")) in _DAEMONS for a in argv[:2])

    if is_daemon(popen.pid):
        return popen.pid
    kids = subprocess.run(["pgrep", "-P", str(popen.pid)], capture_output=True, text=True).stdout.split()
    for k in kids:
        if is_daemon(int(k)):
            return int(k)
    return popen.pid


@dataclass
class Memory:
    rss_kib: int
    anon_kib: int  # heap, Python objects, BPF-side buffers the process mapped
    file_kib: int  # shared libraries and other file pages (shared with other processes)
    hwm_kib: int  # peak RSS since start

    @property
    def rss_mib(self) -> float:
        return round(self.rss_kib / 1024, 1)


def memory(pid: int) -> Memory:
    d: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                d[k] = int(v.split()[0])
    return Memory(d["VmRSS"], d["RssAnon"], d["RssFile"] + d.get("RssShmem", 0), d["VmHWM"])


def libraries(pid: int, top: int = 8) -> list[tuple[str, int]]:
    """The biggest resident mappings by file (KiB): what a process holds and why."""
    rss: dict[str, int] = {}
    cur = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                cur = parts[5] if len(parts) > 5 else "[anon]"
            elif parts[0] == "Rss:":
                rss[cur] = rss.get(cur, 0) + int(parts[1])
    return sorted(rss.items(), key=lambda kv: -kv[1])[:top]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def idle_cpu(pids: Iterable[int], seconds: float) -> dict[int, float]:
    """Percent of one CPU each process used over ``seconds`` of wall time (while nothing asks it
    for anything)."""
    pids = list(pids)
    c0 = {p: cpu_seconds(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return {p: round(100 * (cpu_seconds(p) - c0[p]) / dt, 2) for p in pids}


def map_memory(bpf_root: str) -> dict[str, dict[str, int]]:
    """Every map pinned under ``bpf_root``: kernel-accounted bytes (fdinfo ``memlock``), max entries."""
    out: dict[str, dict[str, int]] = {}
    for dirpath, _dirs, files in os.walk(bpf_root):
        for fn in files:
            path = os.path.join(dirpath, fn)
            try:
                fd = syscall.obj_get(path)
            except OSError:
                continue
            try:
                info = stats.fdinfo(fd)
                if "map_type" not in info:
                    continue  # a program or link pin
                mid = int(info.get("map_id", 0))
                name = os.path.relpath(path, bpf_root)
                if any(v["id"] == mid for v in out.values()):
                    continue  # an alias pin of a map already counted
                out[name] = {"id": mid, "bytes": int(info.get("memlock", 0)),
                             "max_entries": int(info.get("max_entries", 0))}
            finally:
                os.close(fd)
    return out
