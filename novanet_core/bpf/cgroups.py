"""Where the cgroup v2 hierarchy is mounted (the datapath attaches socket-level programs under
it; the lab gives each node a subtree of it)."""

from __future__ import annotations


def cgroup2_mount() -> str | None:
    """The cgroup v2 mount point: ``/sys/fs/cgroup`` on a unified host, ``/sys/fs/cgroup/unified``
    in the hybrid layout (v1 controllers elsewhere); None when there is none."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        return None
    return None
