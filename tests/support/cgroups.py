"""Throwaway cgroup v2 directories for tests: the socket-level Service programs of a test's
dataplane attach there (never at the machine's cgroup root, which every other process shares)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from novanet_core.bpf.cgroups import cgroup2_mount


def root() -> str:
    mnt = cgroup2_mount()
    assert mnt, "no cgroup v2 hierarchy mounted"
    return mnt


def create(name: str) -> str:
    path = os.path.join(root(), name)
    os.makedirs(path, exist_ok=True)
    return path


def remove(path: str) -> None:
    """Move what is left inside to the root, then remove the tree bottom-up (best effort: a
    directory another test still populates stays)."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                with open(os.path.join(root(), "cgroup.procs"), "w") as f:
                    f.write(pid)
        except OSError:
            pass
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def argv_in(path: str, argv: Sequence[str]) -> list[str]:
    """``argv`` started inside cgroup ``path`` (it joins before exec, so every socket it opens
    is the cgroup's)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', path, *argv]
