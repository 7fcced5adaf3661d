"""Compile, load, pin and attach the Geneve programs (BCC for compiling, raw bpf(2) for the rest).

Everything ends up pinned under ``<bpf.root>/geneve`` or held by a pinned object: the encap
program by the core ``tunnel_progs`` array, the ingress program by a pinned tcx link on the
underlay device. So the agent (which loads them) may die or restart without traffic noticing;
a restart loads a new version and swaps it in atomically (map update, BPF_LINK_UPDATE).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from typing import Any

from novanet_core.bpf import bpffs, compiler, layouts_c, links, pinned, syscall
from novanet_core.bpf.layouts import TunnelSlot
from novanet_geneve import layouts, wire

log = logging.getLogger(__name__)

ENCAP = "nv_geneve_encap"
INGRESS = "nv_geneve_ingress"
SHARED = ("endpoints", "config", "tunnels", "drops")


class GeneveLoadError(RuntimeError):
    pass


def prelude(root: str) -> str:
    out = [layouts_c.shared_prelude(root, SHARED)]
    out += layouts_c.enum_defines("GNV_STAT_", layouts.Stat)
    out += [f"#define GNV_{k} {getattr(wire, k)}" for k in
            ("PORT", "ETH_P_TEB", "OPT_CLASS", "OPT_TYPE", "OPT_DATA_LEN", "OVERHEAD", "SPORT_MIN", "SPORT_MAX")]
    out += [layouts_c.c_struct(s) for s in layouts.STRUCTS]
    out += [layouts_c.map_decl(n, m, layouts.pin_path(root, n)) for n, m in layouts.PRIVATE_MAPS.items()]
    return "\n".join(out) + "\n"


def source(root: str) -> str:
    text = importlib.resources.files("novanet_geneve").joinpath("bpf/geneve.c").read_text()
    return text.replace("\nNV_GENERATED\n", "\n" + prelude(root) + "\n", 1)


def _guard_private_maps(root: str) -> None:
    """BCC reuses whatever map sits at a pin; a private pin of another layout is simply dropped
    (its content is rebuilt from the state source / restarts counting)."""
    for m in layouts.PRIVATE_MAPS.values():
        path = pinned.versioned_path(layouts.plugin_dir(root), m.spec)
        info = pinned.pinned_info(path)
        if info is not None and not m.spec.matches(info):
            log.warning("geneve: %s does not match layout v%d; recreating it", path, m.spec.version)
            os.unlink(path)


Loaded = compiler.Programs


def load(root: str, header_tree: str) -> Loaded:
    os.makedirs(pinned.map_dir(layouts.plugin_dir(root)), exist_ok=True)
    os.makedirs(os.path.join(layouts.plugin_dir(root), "links"), exist_ok=True)
    _guard_private_maps(root)
    try:  # in a helper process: the agent never maps the compiler (novanet_core.bpf.compiler)
        return compiler.compile_and_load(source(root), (ENCAP, INGRESS), header_tree, root, "geneve programs")
    except compiler.CompileError as e:
        raise GeneveLoadError(str(e)) from e


def _pin_prog(root: str, name: str, fd: int) -> None:
    path = os.path.join(layouts.plugin_dir(root), name)
    if os.path.lexists(path):
        os.unlink(path)
    syscall.obj_pin(fd, path)


def install(root: str, loaded: Loaded, underlay_ifname: str, underlay_ifindex: int) -> dict[str, Any]:
    """Publish the encap program in the tunnel slot and (re)attach the ingress program."""
    _pin_prog(root, ENCAP, loaded.fds[ENCAP])
    _pin_prog(root, INGRESS, loaded.fds[INGRESS])
    layouts_c.set_tunnel_slot(root, TunnelSlot.ENCAP, loaded.fds[ENCAP])
    swapped = attach_ingress(root, underlay_ifname, underlay_ifindex, loaded.fds[INGRESS])
    return {"slot": int(TunnelSlot.ENCAP), "link": link_path(root, underlay_ifname), "swapped": swapped}


def link_path(root: str, ifname: str) -> str:
    return os.path.join(layouts.plugin_dir(root), "links", f"{ifname}_ingress")


def attach_ingress(root: str, ifname: str, ifindex: int, prog_fd: int) -> bool:
    """tcx ingress link, pinned; an existing link on the same device gets the new program atomically."""
    path = link_path(root, ifname)
    for fn in os.listdir(os.path.dirname(path)):  # links left on another underlay device
        other = os.path.join(os.path.dirname(path), fn)
        if other != path:
            links.detach(other)
    return links.attach_or_swap(path, prog_fd, ifindex, ingress=True)


def uninstall(root: str) -> None:
    """Empty the slot (the datapath then drops NO_TUNNEL), detach, unpin everything of ours."""
    layouts_c.clear_tunnel_slot(root, TunnelSlot.ENCAP)
    d = layouts.plugin_dir(root)
    link_dir = os.path.join(d, "links")
    if os.path.isdir(link_dir):
        for fn in os.listdir(link_dir):
            links.detach(os.path.join(link_dir, fn))
    if os.path.isdir(d):
        bpffs.remove_tree(d)


def stats(root: str) -> dict[str, int]:
    try:
        fd = syscall.obj_get(layouts.pin_path(root, "geneve_stats"))
    except FileNotFoundError:
        return {}
    try:
        return {s.name.lower(): syscall.percpu_sum_u64(fd, int(s).to_bytes(4, "little")) for s in layouts.Stat}
    finally:
        os.close(fd)
