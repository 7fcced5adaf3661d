"""Where the Services programs attach outside the pod veths, as pinned links under
``<root>/svc_links/``:

* the eight cgroup sock_addr programs (connect, sendmsg, recvmsg, getpeername, each for IPv4
  and IPv6) and the cgroup sock release program (drops a closing socket's reverse
  translations) on the node's cgroup v2 directory (``bpf.cgroupRoot``; on a real node the cgroup v2 root, so every
  pod and host process is covered; in the lab, the node's own subtree);
* ``nv_from_underlay`` as tcx ingress of the node's underlay interface (NodePort from outside).

Like the veth links, a pinned link owns its attachment (translation goes on while the
dataplane is down) and takes a new program version with one atomic BPF_LINK_UPDATE.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from novanet_core.bpf import links, syscall
from novanet_core.bpf.cgroups import cgroup2_mount
from novanet_ebpf_policy.program import FROM_UNDERLAY, SOCK_PROGRAMS

log = logging.getLogger(__name__)

_HOOK = {10: "connect4", 14: "sendmsg4", 19: "recvmsg4", 29: "getpeername4",
         11: "connect6", 15: "sendmsg6", 20: "recvmsg6", 30: "getpeername6", 34: "release"}
UNDERLAY_PIN = "underlay_ingress"


def resolve_cgroup_root(configured: str | None) -> str:
    path = configured or cgroup2_mount()
    if not path:
        raise FileNotFoundError("bpf.cgroupRoot: no cgroup v2 hierarchy is mounted (mount -t cgroup2)")
    if not os.path.isfile(os.path.join(path, "cgroup.procs")):
        raise FileNotFoundError(f"bpf.cgroupRoot: {path} is not a cgroup v2 directory")
    return path


class ServiceAttacher:
    def __init__(self, root: str):
        self.dir = os.path.join(root, "svc_links")
        os.makedirs(self.dir, exist_ok=True)
        self.cgroup: str | None = None
        self.underlay: str | None = None

    def _pin(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # ------------------------------------------------------------------ cgroup
    def attach_cgroup(self, cgroup: str, prog_fds: dict[str, int]) -> dict[str, str]:
        """Attach (or swap into) the nine hooks of ``cgroup``; a link left on another cgroup (the
        config moved) is replaced. Returns hook -> "created" | "swapped" | "kept"."""
        out = {}
        cg_id = os.stat(cgroup).st_ino
        for name, at in SOCK_PROGRAMS.items():
            hook = _HOOK[at]
            path = self._pin(f"cgroup_{hook}")
            try:
                lfd = syscall.obj_get(path)
            except FileNotFoundError:
                lfd = -1
            if lfd >= 0:
                try:
                    info = syscall.cgroup_link_info(lfd)
                    if info.cgroup_id == cg_id:
                        li = syscall.LinkInfo(syscall.BPF_LINK_TYPE_CGROUP, info.id, info.prog_id, 0, at)
                        out[hook] = "swapped" if links.swap(lfd, li, prog_fds[name]) else "kept"
                        continue
                finally:
                    os.close(lfd)
                self._detach(path)
            fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
            try:
                lfd = syscall.cgroup_attach(prog_fds[name], fd, at)
            finally:
                os.close(fd)
            try:
                syscall.obj_pin(lfd, path)
            finally:
                os.close(lfd)
            out[hook] = "created"
        self.cgroup = cgroup
        return out

    def detach_cgroup(self) -> None:
        for hook in _HOOK.values():
            self._detach(self._pin(f"cgroup_{hook}"))
        self.cgroup = None

    # ------------------------------------------------------------------ underlay
    def attach_underlay(self, ifname: str, ifindex: int, prog_fds: dict[str, int]) -> bool:
        """tcx ingress of the underlay interface, first in its chain (a tunnel plugin's ingress
        program may share the device and end the chain for everything that is not its own;
        ours passes on, with "next", whatever is not a NodePort flow). True if a link was kept."""
        path = self._pin(UNDERLAY_PIN)
        try:
            lfd = syscall.obj_get(path)
        except FileNotFoundError:
            lfd = -1
        if lfd >= 0:
            try:
                info = syscall.link_info(lfd)
                if info.ifindex == ifindex:
                    links.swap(lfd, info, prog_fds[FROM_UNDERLAY])
                    self.underlay = ifname
                    return True
            finally:
                os.close(lfd)
            self._detach(path)
        lfd = syscall.tcx_attach(prog_fds[FROM_UNDERLAY], ifindex, ingress=True, flags=syscall.BPF_F_BEFORE)
        try:
            syscall.obj_pin(lfd, path)
        finally:
            os.close(lfd)
        self.underlay = ifname
        return False

    def detach_underlay(self) -> None:
        links.detach(self._pin(UNDERLAY_PIN))
        self.underlay = None

    # ------------------------------------------------------------------ restart / reload
    def reconcile(self, prog_fds: dict[str, int]) -> list[str]:
        """Swap new program versions into every pinned Services link (start, reload)."""
        swapped = []
        for fn in sorted(os.listdir(self.dir)):
            path = self._pin(fn)
            try:
                lfd = syscall.obj_get(path)
            except FileNotFoundError:
                continue
            try:
                if fn == UNDERLAY_PIN:
                    info = syscall.link_info(lfd)
                    if info.ifindex == 0:  # the device is gone
                        self._detach(path)
                        continue
                    if links.swap(lfd, info, prog_fds[FROM_UNDERLAY]):
                        swapped.append(fn)
                    continue
                ci = syscall.cgroup_link_info(lfd)
                name = next((n for n, at in SOCK_PROGRAMS.items() if at == ci.attach_type), None)
                if name is None:
                    continue
                li = syscall.LinkInfo(syscall.BPF_LINK_TYPE_CGROUP, ci.id, ci.prog_id, 0, ci.attach_type)
                if links.swap(lfd, li, prog_fds[name]):
                    swapped.append(fn)
            finally:
                os.close(lfd)
        return swapped

    def list(self) -> list[dict[str, Any]]:
        out = []
        for fn in sorted(os.listdir(self.dir)):
            try:
                lfd = syscall.obj_get(self._pin(fn))
            except FileNotFoundError:
                continue
            try:
                if fn == UNDERLAY_PIN:
                    i = syscall.link_info(lfd)
                    out.append({"hook": "underlay_ingress", "target": self.underlay or "", "ifindex": i.ifindex,
                                "link_id": i.id, "prog_id": i.prog_id, "pin": self._pin(fn)})
                else:
                    c = syscall.cgroup_link_info(lfd)
                    out.append({"hook": _HOOK.get(c.attach_type, str(c.attach_type)), "target": self.cgroup or "",
                                "cgroup_id": c.cgroup_id, "link_id": c.id, "prog_id": c.prog_id,
                                "pin": self._pin(fn)})
            finally:
                os.close(lfd)
        return out

    @staticmethod
    def _detach(path: str) -> None:
        try:
            lfd = syscall.obj_get(path)
        except FileNotFoundError:
            return
        try:
            try:
                syscall.link_detach(lfd)
            except OSError as e:
                if e.errno not in (errno.ENOLINK, errno.EINVAL, errno.ENODEV, errno.ENOENT):
                    raise
        finally:
            os.close(lfd)
            os.unlink(path)
