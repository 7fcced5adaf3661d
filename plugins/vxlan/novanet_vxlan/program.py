"""Compile, load, pin and attach the VXLAN programs (BCC for compiling, raw bpf(2) for the rest).

The encap program is held by the core ``tunnel_progs`` array, the ingress program by a pinned
tcx link on nvx0: both outlive the agent that loads them; a restart swaps new versions in
atomically (map update, BPF_LINK_UPDATE).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from typing import Any

from novanet_core.bpf import bpffs, compiler, layouts_c, links, pinned, syscall
from novanet_core.bpf.layouts import TunnelSlot
from novanet_vxlan import device, layouts

log = logging.getLogger(__name__)

ENCAP = "nv_vxlan_encap"
INGRESS = "nv_vxlan_ingress"
SHARED = ("endpoints", "tunnels", "drops")


class VxlanLoadError(RuntimeError):
    pass


def prelude(root: str) -> str:
    mac = ", ".join(f"0x{b}" for b in device.NEXT_HOP_MAC.split(":"))
    out = [layouts_c.shared_prelude(root, SHARED)]
    out += layouts_c.enum_defines("VX_STAT_", layouts.Stat)
    out.append(f"#define VX_DEVICE_MAC {{{mac}}}")
    out += [layouts_c.map_decl(n, m, layouts.pin_path(root, n)) for n, m in layouts.PRIVATE_MAPS.items()]
    return "\n".join(out) + "\n"


def source(root: str) -> str:
    text = importlib.resources.files("novanet_vxlan").joinpath("bpf/vxlan.c").read_text()
    return text.replace("\nNV_GENERATED\n", "\n" + prelude(root) + "\n", 1)


Loaded = compiler.Programs


def load(root: str, header_tree: str) -> Loaded:
    d = layouts.plugin_dir(root)
    os.makedirs(pinned.map_dir(d), exist_ok=True)
    os.makedirs(os.path.join(d, "links"), exist_ok=True)
    for m in layouts.PRIVATE_MAPS.values():  # counters only: a pin of another layout is dropped
        path = pinned.versioned_path(d, m.spec)
        info = pinned.pinned_info(path)
        if info is not None and not m.spec.matches(info):
            os.unlink(path)
    try:  # in a helper process: the agent never maps the compiler (novanet_core.bpf.compiler)
        return compiler.compile_and_load(source(root), (ENCAP, INGRESS), header_tree, root, "vxlan programs")
    except compiler.CompileError as e:
        raise VxlanLoadError(str(e)) from e


def link_path(root: str) -> str:
    return os.path.join(layouts.plugin_dir(root), "links", f"{device.DEVICE}_ingress")


def install(root: str, loaded: Loaded, ifindex: int) -> dict[str, Any]:
    d = layouts.plugin_dir(root)
    for name, fd in loaded.fds.items():
        path = os.path.join(d, name)
        if os.path.lexists(path):
            os.unlink(path)
        syscall.obj_pin(fd, path)
    layouts_c.set_tunnel_slot(root, TunnelSlot.ENCAP, loaded.fds[ENCAP])
    path = link_path(root)
    swapped = links.attach_or_swap(path, loaded.fds[INGRESS], ifindex, ingress=True)
    return {"slot": int(TunnelSlot.ENCAP), "link": path, "swapped": swapped}


def uninstall(root: str) -> None:
    layouts_c.clear_tunnel_slot(root, TunnelSlot.ENCAP)
    links.detach(link_path(root))
    d = layouts.plugin_dir(root)
    if os.path.isdir(d):
        bpffs.remove_tree(d)


def stats(root: str) -> dict[str, int]:
    try:
        fd = syscall.obj_get(layouts.pin_path(root, "vxlan_stats"))
    except FileNotFoundError:
        return {}
    try:
        return {s.name.lower(): syscall.percpu_sum_u64(fd, int(s).to_bytes(4, "little")) for s in layouts.Stat}
    finally:
        os.close(fd)
