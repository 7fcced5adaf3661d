"""Pinned tcx links shared by every BPF-owning plugin: attach-or-swap and detach.

A link pinned under the bpffs root keeps its program running when the owning process dies; a new
program version is swapped into the existing link atomically (BPF_LINK_UPDATE) instead of
detaching and re-attaching, which would leave a window with no program.
"""

from __future__ import annotations

import os

from novanet_core.bpf import syscall


def attach_or_swap(path: str, prog_fd: int, ifindex: int, ingress: bool) -> bool:
    """Make the pinned link at ``path`` run ``prog_fd`` on ``ifindex``; True if an existing link
    was updated in place, False if a new link was created (and pinned)."""
    try:
        lfd = syscall.obj_get(path)
    except FileNotFoundError:
        lfd = -1
    if lfd >= 0:
        try:
            if syscall.link_info(lfd).ifindex == ifindex:
                syscall.link_update(lfd, prog_fd)
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


def detach(path: str) -> None:
    """Detach and unpin the link at ``path`` (no-op if it is not there)."""
    try:
        lfd = syscall.obj_get(path)
    except FileNotFoundError:
        return
    try:
        try:
            syscall.link_detach(lfd)
        except OSError:
            pass  # already detached: its device is gone
    finally:
        os.close(lfd)
        os.unlink(path)
