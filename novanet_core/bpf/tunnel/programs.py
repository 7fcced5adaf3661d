"""The BPF side of a tunnel plugin: what its two programs are, and how they are built, published,
attached, counted and removed.

Every tunnel plugin has the same shape: an encap program the datapath's from-pod program
tail-calls through the core ``tunnel_progs`` array (slot ENCAP), an ingress program on a device
(its pinned tcx link), a per-CPU event counter array ``<name>_stats``, perhaps a few maps of its
own, and everything pinned under ``<bpf.root>/<name>``, so the programs outlive the agent that
loaded them and a restart swaps new versions in atomically (map update, BPF_LINK_UPDATE). A plugin
describes its programs with one :class:`TunnelPrograms`; this module does the rest.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from novanet_core.bpf import bpffs, layouts_c, links, pinned, programs, stats
from novanet_core.bpf.layouts import MapDef, Struct, TunnelSlot
from novanet_core.bpf.pinned import MapSpec
from novanet_core.bpf.programs import Programs

STAT_SLOTS = 16  # the counter array's size: room for new events without a layout change


@dataclass(frozen=True)
class TunnelPrograms:
    name: str  # pins under <bpf.root>/<name>; counters in the map <name>_stats
    package: str  # the plugin package shipping the C source
    source: str  # path of the C source inside the package (its NV_GENERATED line gets the prelude)
    encap: str  # function published in tunnel_progs[ENCAP]
    ingress: str  # function attached (tcx ingress) to the device setup() is given
    shared: tuple[str, ...]  # core maps the programs use (keys of novanet_core.bpf.layouts.SHARED_MAPS)
    stats: type[enum.IntEnum]  # the events counted, as <c_prefix>_STAT_<NAME> in C
    c_prefix: str  # prefix of the generated C names, e.g. "GNV"
    defines: Mapping[str, Any] = field(default_factory=dict)  # more constants, as <c_prefix>_<KEY>
    maps: tuple[MapDef, ...] = ()  # the plugin's own maps besides the counters
    structs: tuple[type[Struct], ...] = ()  # C structs those maps use
    egress: str = ""  # optional function attached as tcx egress of the same device

    # ------------------------------------------------------------------ pins
    @property
    def stats_map(self) -> MapDef:
        return MapDef(MapSpec(f"{self.name}_stats", "percpu_array", 4, 8, STAT_SLOTS, 1), "u32", "u64")

    @property
    def private_maps(self) -> dict[str, MapDef]:
        return {m.spec.name: m for m in (*self.maps, self.stats_map)}

    def plugin_dir(self, root: str) -> str:
        return os.path.join(root, self.name)

    def pin_path(self, root: str, map_name: str) -> str:
        """Where one of the plugin's own maps is pinned."""
        return pinned.versioned_path(self.plugin_dir(root), self.private_maps[map_name].spec)

    def link_path(self, root: str, ifname: str, direction: str = "ingress") -> str:
        return os.path.join(self.plugin_dir(root), "links", f"{ifname}_{direction}")

    # ------------------------------------------------------------------ source
    def prelude(self, root: str) -> str:
        p = self.c_prefix
        out = [layouts_c.shared_prelude(root, self.shared)]
        out += layouts_c.enum_defines(f"{p}_STAT_", self.stats)
        out += [f"#define {p}_{k} {v}" for k, v in self.defines.items()]
        out += [layouts_c.c_struct(s) for s in self.structs]
        out += [layouts_c.map_decl(n, m, self.pin_path(root, n)) for n, m in self.private_maps.items()]
        out.append(_counter_helpers(self.stats_map.spec.name, "drops" in self.shared))
        return "\n".join(out) + "\n"

    def render(self, root: str) -> str:
        return programs.render_source(self.package, self.source, self.prelude(root))

    # ------------------------------------------------------------------ lifecycle
    def load(self, root: str, header_tree: str) -> Programs:
        """Compile and load both programs (pinned under the plugin directory)."""
        d = self.plugin_dir(root)
        os.makedirs(pinned.map_dir(d), exist_ok=True)
        os.makedirs(os.path.join(d, "links"), exist_ok=True)
        # Counters and per-node state are rebuilt anyway: a pin of another layout is dropped.
        pinned.drop_mismatched(d, (m.spec for m in self.private_maps.values()))
        functions = (self.encap, self.ingress) + ((self.egress,) if self.egress else ())
        return programs.compile_and_load(self.render(root), functions, header_tree, root, f"{self.name} programs",
                                         pin_dir=d)

    def install(self, root: str, loaded: Programs, ifname: str, ifindex: int) -> dict[str, Any]:
        """Publish the encap program in the tunnel slot and attach (or swap) the ingress program on
        ``ifname``; links this plugin left on other devices are detached."""
        layouts_c.set_tunnel_slot(root, TunnelSlot.ENCAP, loaded.fds[self.encap])
        path = self.link_path(root, ifname)
        out_path = self.link_path(root, ifname, "egress") if self.egress else ""
        for fn in os.listdir(os.path.dirname(path)):
            other = os.path.join(os.path.dirname(path), fn)
            if other not in (path, out_path):
                links.detach(other)
        swapped = links.attach_or_swap(path, loaded.fds[self.ingress], ifindex, ingress=True)
        if self.egress:
            links.attach_or_swap(out_path, loaded.fds[self.egress], ifindex, ingress=False)
        return {"slot": int(TunnelSlot.ENCAP), "link": path, "swapped": swapped}

    def setup(self, root: str, header_tree: str, ifname: str, ifindex: int) -> dict[str, Any]:
        """Everything from an empty (or older) bpffs to running programs; what :meth:`install` says."""
        if root.startswith(bpffs.BPFFS):
            bpffs.ensure_mounted()
        bpffs.ensure_dir(root)
        os.makedirs(pinned.map_dir(root), exist_ok=True)
        loaded = self.load(root, header_tree)
        try:
            return self.install(root, loaded, ifname, ifindex)
        finally:
            loaded.close()  # the slot, the pinned link and the pins hold the programs now

    def uninstall(self, root: str) -> None:
        """Empty the slot (the datapath then drops NO_TUNNEL), detach, unpin everything of ours."""
        layouts_c.clear_tunnel_slot(root, TunnelSlot.ENCAP)
        d = self.plugin_dir(root)
        link_dir = os.path.join(d, "links")
        if os.path.isdir(link_dir):
            for fn in os.listdir(link_dir):
                links.detach(os.path.join(link_dir, fn))
        if os.path.isdir(d):
            bpffs.remove_tree(d)

    def counters(self, root: str) -> dict[str, int]:
        return stats.percpu_counters(self.pin_path(root, self.stats_map.spec.name), self.stats)


def _counter_helpers(stats_map: str, with_drops: bool) -> str:
    """``nv_stat(event)``, and ``nv_drop(reason, event)`` (count in the shared ``drops`` too, then
    TC_ACT_SHOT), so that no tunnel program writes its own."""
    out = [f"static __always_inline void nv_stat(u32 i) {{ u64 *v = {stats_map}.lookup(&i); if (v) *v += 1; }}"]
    if with_drops:
        out.append("static __always_inline int nv_drop(u32 reason, u32 stat) {\n"
                   "    u32 r = reason;\n    u64 *v = drops.lookup(&r);\n    if (v) *v += 1;\n"
                   "    nv_stat(stat);\n    return TC_ACT_SHOT;\n}")
    return "\n".join(out)
