"""Attaching the programs to host veths: tcx links (pinned) or clsact + cls_bpf (fallback).

tcx links are pinned as ``<root>/links/<ifname>_ingress|_egress``: the link, not this process,
owns the attachment, so traffic keeps flowing while the dataplane is down, and a new program
version is swapped in with one atomic BPF_LINK_UPDATE. In ``tc`` mode the cls_bpf filter (held by
the clsact qdisc) plays the same role and is swapped with an atomic filter replace.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

from novanet_core.bpf import links, syscall
from novanet_ebpf_policy.program import FROM_POD, TO_POD

log = logging.getLogger(__name__)

DIRECTIONS = {"ingress": FROM_POD, "egress": TO_POD}


class AttachError(RuntimeError):
    pass


def _ifname(ifindex: int) -> str | None:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None


def tcx_supported() -> bool:
    """tcx arrived in Linux 6.6; older kernels reject attach type 46 with EINVAL."""
    rel = os.uname().release.split("-", 1)[0].split(".")
    try:
        major, minor = int(rel[0]), int(rel[1])
    except (ValueError, IndexError):
        return False
    return (major, minor) >= (6, 6)


class TcxAttacher:
    mode = "tcx"

    def __init__(self, root: str):
        self.dir = os.path.join(root, "links")
        os.makedirs(self.dir, exist_ok=True)

    def _pin(self, ifname: str, direction: str) -> str:
        return os.path.join(self.dir, f"{ifname}_{direction}")

    def attach(self, ifname: str, ifindex: int, prog_fds: dict[str, int]) -> None:
        for direction, prog in DIRECTIONS.items():
            links.attach_or_swap(self._pin(ifname, direction), prog_fds[prog], ifindex,
                                 ingress=direction == "ingress")

    def detach(self, ifname: str) -> None:
        for direction in DIRECTIONS:
            links.detach(self._pin(ifname, direction))

    def rename(self, old: str, new: str) -> None:
        """The device was renamed: its link pins follow (the links themselves hold the device)."""
        for direction in DIRECTIONS:
            src = self._pin(old, direction)
            if os.path.lexists(src):
                dst = self._pin(new, direction)
                if os.path.lexists(dst):  # a defunct link of an earlier device of that name
                    links.detach(dst)
                os.rename(src, dst)

    def reconcile(self, prog_fds: dict[str, int], valid_ifindexes: set[int] | None = None) -> dict[str, Any]:
        """On start: swap the new programs into every live link; unpin links whose device is gone."""
        swapped, stale = [], []
        for fn in sorted(os.listdir(self.dir)):
            ifname, _, direction = fn.rpartition("_")
            path = os.path.join(self.dir, fn)
            if direction not in DIRECTIONS:
                continue
            try:
                lfd = syscall.obj_get(path)
            except FileNotFoundError:
                continue
            try:
                info = syscall.link_info(lfd)
                gone = info.ifindex == 0 or _ifname(info.ifindex) != ifname
                if not gone and valid_ifindexes is not None and info.ifindex not in valid_ifindexes:
                    gone = True
                if gone:
                    stale.append(fn)
                    if info.ifindex:
                        try:
                            syscall.link_detach(lfd)
                        except OSError:
                            pass
                elif links.swap(lfd, info, prog_fds[DIRECTIONS[direction]]):
                    swapped.append(fn)
            finally:
                os.close(lfd)
            if fn in stale:
                os.unlink(path)
        return {"swapped": swapped, "stale_removed": stale}

    def list(self) -> list[dict[str, Any]]:
        out = []
        for fn in sorted(os.listdir(self.dir)):
            ifname, _, direction = fn.rpartition("_")
            try:
                lfd = syscall.obj_get(os.path.join(self.dir, fn))
            except FileNotFoundError:
                continue
            try:
                i = syscall.link_info(lfd)
            finally:
                os.close(lfd)
            out.append({"interface": ifname, "direction": direction, "link_id": i.id, "prog_id": i.prog_id,
                        "ifindex": i.ifindex, "pin": os.path.join(self.dir, fn)})
        return out


class TcAttacher:
    """clsact + cls_bpf direct-action through pyroute2 (kernels without tcx, or bpf.attachMode: tc)."""

    mode = "tc"
    _PARENT = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}
    _PRIO = 1  # a fixed (prio, handle) makes `replace` an atomic program swap
    _HANDLE = 1

    def __init__(self, root: str):
        from pyroute2 import IPRoute

        self._ipr = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def attach(self, ifname: str, ifindex: int, prog_fds: dict[str, int]) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.tc("add", "clsact", ifindex)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise AttachError(f"{ifname}: cannot add clsact qdisc: {e}") from e
        for direction, prog in DIRECTIONS.items():
            self._ipr.tc("replace-filter", "bpf", ifindex, self._HANDLE, fd=prog_fds[prog], name=prog,
                         parent=self._PARENT[direction], prio=self._PRIO, protocol=0x0003,
                         direct_action=True, classid=1)

    def detach(self, ifname: str) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        idx = self._ipr.link_lookup(ifname=ifname)
        if not idx:
            return
        try:
            self._ipr.tc("del", "clsact", idx[0])
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.EINVAL):
                raise

    def rename(self, old: str, new: str) -> None:
        """Filters belong to the device, not its name: nothing to do."""

    def filters(self, ifindex: int) -> list[dict[str, Any]]:
        out = []
        for direction, parent in self._PARENT.items():
            try:
                msgs = self._ipr.get_filters(index=ifindex, parent=int(parent.replace(":", ""), 16))
            except Exception:
                continue
            for m in msgs:
                opts = m.get_attr("TCA_OPTIONS")
                if opts is None or m.get_attr("TCA_KIND") != "bpf":
                    continue
                out.append({"direction": direction, "prog_id": opts.get_attr("TCA_BPF_ID"),
                            "name": opts.get_attr("TCA_BPF_NAME")})
        return out

    def reconcile(self, prog_fds: dict[str, int], valid_ifindexes: set[int] | None = None) -> dict[str, Any]:
        swapped = []
        for idx in sorted(valid_ifindexes or ()):
            name = _ifname(idx)
            if name is None:
                continue
            if self.filters(idx):
                self.attach(name, idx, prog_fds)
                swapped.append(name)
        return {"swapped": swapped, "stale_removed": []}

    def list(self) -> list[dict[str, Any]]:
        return []
