"""Pinned tcx links shared by every BPF-owning plugin: attach-or-swap, swap and detach.

A link pinned under the bpffs root keeps its program running when the owning process dies; a new
program version is swapped into the existing link atomically (BPF_LINK_UPDATE) instead of
detaching and re-attaching, which would leave a window with no program.
"""

from __future__ import annotations

import errno
import os

from novanet_core.bpf import syscall


def attach_or_swap(path: str, prog_fd: int, ifindex: int, ingress: bool) -> bool:
    """Make the pinned link at ``path`` run ``prog_fd`` on ``ifindex``; True if an existing link
    was kept (updated in place, or already running that program), False if a new link was
    created (and pinned)."""
    try:
        lfd = syscall.obj_get(path)
    except FileNotFoundError:
        lfd = -1
    if lfd >= 0:
        try:
            info = syscall.link_info(lfd)
            if info.ifindex == ifindex:
                swap(lfd, info, prog_fd)
                return True
        finally:
            os.close(lfd)
        detach(path)  # the device was recreated under the same name: that link is defunct
    lfd = syscall.tcx_attach(prog_fd, ifindex, ingress=ingress)
    try:
        syscall.obj_pin(lfd, path)
    finally:
        os.close(lfd)
    return False


def swap(lfd: int, info: syscall.LinkInfo, new_fd: int) -> bool:
    """Swap ``new_fd`` into the link unless it already runs it; True if swapped.

    BPF_F_REPLACE names the program we saw, so a concurrent swap by another process fails with
    EPERM instead of being silently overwritten."""
    if syscall.prog_info(new_fd).id == info.prog_id:
        return False
    old_fd = syscall.prog_fd_by_id(info.prog_id)
    try:
        syscall.link_update(lfd, new_fd, old_fd)
    finally:
        os.close(old_fd)
    return True


def detach(path: str) -> None:
    """Detach and unpin the link at ``path`` (no-op if it is not there)."""
    try:
        lfd = syscall.obj_get(path)
    except FileNotFoundError:
        return
    try:
        try:
            syscall.link_detach(lfd)
        except OSError as e:
            if e.errno not in (errno.ENOLINK, errno.EINVAL, errno.ENODEV):  # its device is gone
                raise
    finally:
        os.close(lfd)
        os.unlink(path)
