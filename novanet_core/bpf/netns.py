"""Enter a network namespace from the *calling thread* only (setns is per thread).

``ip netns exec`` also unshares the mount namespace and hides bpffs, so a process that pins
BPF objects must switch the network namespace alone: this module, or ``nsenter --net=``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns(CLONE_NEWNET): {os.strerror(e)}")


def netns_path(name_or_path: str) -> str:
    return name_or_path if "/" in name_or_path else f"/run/netns/{name_or_path}"


def enter(name_or_path: str) -> None:
    """Move the calling thread into the namespace for good (threads it starts inherit it)."""
    fd = os.open(netns_path(name_or_path), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextmanager
def netns(name_or_path: str) -> Iterator[None]:
    """Run the block in another network namespace, then return to the original one."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(name_or_path)
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(orig)
