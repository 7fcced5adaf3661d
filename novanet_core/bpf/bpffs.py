"""bpffs: make sure it is mounted and manage pin directories under it."""

from __future__ import annotations

import ctypes
import os

BPFFS = "/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11

_libc = ctypes.CDLL(None, use_errno=True)


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def is_bpffs(path: str) -> bool:
    st = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(st)) != 0:
        return False
    return (st.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def ensure_mounted(mountpoint: str = BPFFS) -> bool:
    """Mount bpffs at ``mountpoint`` unless it already is; True when this call mounted it.

    The mount is shared by every process of the host (``ip netns exec`` would hide it; the
    dataplane must not run under it).
    """
    if is_bpffs(mountpoint):
        return False
    os.makedirs(mountpoint, exist_ok=True)
    if _libc.mount(b"bpf", os.fsencode(mountpoint), b"bpf", 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount -t bpf bpf {mountpoint}: {os.strerror(e)}")
    return True


def ensure_dir(path: str) -> str:
    """Create a pin directory (parents included) inside a mounted bpffs."""
    parent = path
    while parent not in ("/", "") and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not is_bpffs(path if os.path.exists(path) else parent):
        # Pins outside bpffs fail with EPERM much later; say so now.
        raise OSError(f"{path} is not inside a mounted bpffs (mount -t bpf bpf {BPFFS})")
    os.makedirs(path, exist_ok=True)
    return path


def remove_tree(path: str) -> None:
    """Unpin everything below ``path`` and remove the directories (bpffs has no recursive rmdir)."""
    if not os.path.lexists(path):
        return
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for f in filenames:
            os.unlink(os.path.join(dirpath, f))
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)
    os.rmdir(path)
