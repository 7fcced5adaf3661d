"""Network-namespace helpers.

``setns`` switches only the *calling thread*, which is what we want inside a threaded server: a
netlink socket opened while the thread is in a namespace stays bound to that namespace after the
thread switches back. That costs ~2 ms per pod instead of ~10 ms for pyroute2's
``IPRoute(netns=...)``, which forks a helper process.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns_fd(fd: int, what: str = "") -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns({what}): {os.strerror(e)}" if what else f"setns: {os.strerror(e)}")


def netns_path(name_or_path: str) -> str:
    """A netns name (as `ip netns` keeps them) or a path, as a path."""
    return name_or_path if "/" in name_or_path else f"/run/netns/{name_or_path}"


def enter(name_or_path: str) -> None:
    """Move the calling thread into the namespace for good (threads it starts inherit it)."""
    path = netns_path(name_or_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        _setns_fd(fd, path)
    finally:
        os.close(fd)


@contextmanager
def in_netns(name_or_path: str) -> Iterator[None]:
    """Run the body with the calling thread in the network namespace (name or path), then return.

    ``ip netns exec`` also unshares the mount namespace and hides bpffs, so code that pins BPF
    objects switches the network namespace alone, with this (or ``nsenter --net=``).
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(name_or_path)
        try:
            yield
        finally:
            _setns_fd(own)
    finally:
        os.close(own)


netns = in_netns  # the name the BPF code and its tests use


@contextmanager
def netns_iproute(path: str | None) -> Iterator[IPRoute]:
    """An IPRoute socket bound to the namespace at ``path`` (or the current one for ``None``)."""
    if path is None:
        ipr = IPRoute()
    else:
        with in_netns(path):
            ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()
