"""A busybox root filesystem as a tar, for podman to import as a container image (no registry is
reachable here): the machine's static busybox and the applets the tests call."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

APPLETS = ("sh", "ip", "ping", "wget", "nc", "cat", "sleep", "echo")


def rootfs_tar(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", rootfs / "bin" / a)
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    return tar
