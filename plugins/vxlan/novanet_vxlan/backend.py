"""The ``vxlan`` tunnel backend: the shared collect-metadata device nvx0, kernel routes through it,
and (BPF mode) the programs that pick the remote VTEP per packet.

Two modes, chosen by ``pluginSettings.vxlan.bpf`` (``auto``: on unless ``datapath: kernel``):

* BPF (with a datapath that calls the core tunnel hook, e.g. ``datapath: ebpf``): the encap
  program sits in the core ``tunnel_progs`` slot and the ingress program on nvx0; this backend
  writes the shared ``tunnels`` entries (remote node IP -> nvx0, VNI). Over an IPv6 underlay the
  encap program pushes the outer headers itself and sends the packet out of the underlay device
  (the entry names that device; ``vxlan_nodes`` holds the next hop); nvx0 still receives.
* routes only (``datapath: kernel``): per-remote-PodCIDR lightweight-tunnel routes via nvx0.

The routes are installed in both modes: with BPF they carry the node's own traffic to remote pods.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from novanet_core.backends import BackendContext, ConfigError
from novanet_core.bpf import syscall
from novanet_core.bpf.layouts import TunnelValue, node_key, u8
from novanet_core.bpf.tunnel import BpfTunnel, entries
from novanet_core.config.models import NovaNetConfig
from novanet_core.ipfamily import family_of
from novanet_core.types import NodeInfo
from novanet_vxlan import device, layouts
from novanet_vxlan.layouts import PROGRAMS

log = logging.getLogger(__name__)

BPF_MODES = ("auto", "on", "off", "true", "false")


def config_errors(cfg: NovaNetConfig) -> list[str]:
    mode = str(cfg.pluginSettings.get("vxlan", {}).get("bpf", "auto")).lower()
    return [] if mode in BPF_MODES else [f"pluginSettings.vxlan.bpf: {mode!r} is not auto, on or off"]


class VxlanTunnel(BpfTunnel):
    name = "vxlan"
    overhead = device.OVERHEAD
    programs = PROGRAMS

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)
        cfg = ctx.config
        if errors := config_errors(cfg):
            raise ConfigError("; ".join(errors))
        mode = str(cfg.pluginSettings.get("vxlan", {}).get("bpf", "auto")).lower()
        self.bpf = mode in ("on", "true") or (mode == "auto" and cfg.datapath != "kernel")
        # IPv4 and IPv6 inner packets in both modes: by the BPF programs (bpf/vxlan.c, behind the
        # datapath's tunnel hook), or by the PodCIDR routes through nvx0.
        self.ip_families = (4, 6)
        if self.family == 6 and not self.bpf:
            # routes only: each remote's next hop and nvx0 MAC are derived from an IPv4 node address
            raise ConfigError(f"nodeIP: {ctx.node.ip if ctx.node else ''} is IPv6: tunnelProtocol 'vxlan' runs "
                              "over an IPv6 underlay with its BPF programs only (datapath: ebpf, "
                              "pluginSettings.vxlan.bpf: auto or on), not routes only "
                              f"(datapath: {cfg.datapath!r}, pluginSettings.vxlan.bpf: {mode!r}); or give the "
                              "node an IPv4 address first (nodeIP: <IPv4>,<IPv6>)")

    def attach_device(self, local: NodeInfo) -> tuple[str, int]:
        mac = device.NEXT_HOP_MAC if self.bpf else device.node_mac(local.ip)
        return device.DEVICE, device.ensure_device(local.ip, self.pod_mtu, mac)

    def tunnel_entry(self, node: NodeInfo) -> TunnelValue:
        # over IPv6 the encap program sends out of the underlay itself (bpf/vxlan.c, vx_encap6)
        out = self.underlay_ifindex if self.family == 6 else self.ifindex
        return entries.tunnel_value(out, node.ip, device.VNI)

    def write_nodes(self, remotes: list[NodeInfo]) -> None:
        if self.family != 6:
            return
        fd = syscall.obj_get(self.programs.pin_path(self.root, "vxlan_nodes"))
        try:
            for n in remotes:
                hop = ipaddress.IPv6Address(self.nexthops.get(n.ip, n.ip))
                v = layouts.NodeValue(nexthop6=(u8 * 16).from_buffer_copy(hop.packed))
                syscall.map_update(fd, bytes(layouts.NodeKey(node_ip=node_key(n.ip))), bytes(v))
        finally:
            os.close(fd)

    def forget_node(self, node_ip: str) -> None:
        if self.family != 6:
            return
        fd = syscall.obj_get(self.programs.pin_path(self.root, "vxlan_nodes"))
        try:
            syscall.map_delete(fd, bytes(layouts.NodeKey(node_ip=node_key(node_ip))))
        finally:
            os.close(fd)

    def sync_routes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        want = {cidr: n for n in remotes for cidr in n.pod_cidrs
                if family_of(cidr) in self.ip_families}
        for cidr in set(device.routes()) - set(want):
            device.delete_route(cidr)
        failed = device.set_routes([(cidr, n.ip, local.ip_of(family_of(cidr))) for cidr, n in want.items()],
                                   per_node=not self.bpf)
        if failed:
            log.error("routes to remote PodCIDRs failed: %s", failed)
        if not self.bpf:
            device.prune_next_hops({device.remote_next_hop(n.ip, family_of(c)) for c, n in want.items()})

    def remove_device(self) -> None:
        for cidr in device.routes():
            device.delete_route(cidr)
        device.delete_device()

    def status_row(self, node: NodeInfo) -> dict[str, Any]:
        return {"vni": device.VNI, "port": device.PORT}

    def counters(self) -> dict[str, Any]:
        return {"device": device.DEVICE, "ifindex": self.ifindex, "bpf": self.bpf, "programs": self.installed,
                "counters": self.programs.counters(self.root) if self.bpf else {}}
