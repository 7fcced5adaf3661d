"""The ``geneve`` tunnel backend (lives in the agent; its programs outlive it, pinned).

Per remote node it keeps two map entries (the node's ``nv_<nodename>`` state): the shared
``tunnels`` entry (underlay ifindex, node IP, VNI) the datapath checks before its tail call, and
this plugin's ``geneve_nodes`` entry (underlay next hop, the node's PodCIDR for the trust check).
Routes to remote PodCIDRs go straight over the underlay with the tunnel MTU (the core's default).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from novanet_core.backends import BackendContext, ConfigError
from novanet_core.bpf import syscall
from novanet_core.bpf.layouts import TunnelValue, node_key, u8
from novanet_core.bpf.tunnel import BpfTunnel, entries
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import NodeInfo
from novanet_geneve import layouts, wire


def config_errors(cfg: NovaNetConfig) -> list[str]:
    errors = []
    if cfg.routingMode == "overlay" and cfg.tunnelProtocol == "geneve" and cfg.datapath == "kernel":
        errors.append("tunnelProtocol: 'geneve' is done by BPF programs behind the datapath's tunnel hook; "
                      "datapath 'kernel' has no such hook (use datapath: ebpf, or tunnelProtocol: vxlan)")
    vni = cfg.pluginSettings.get("geneve", {}).get("vni", wire.VNI)
    if isinstance(vni, bool) or not isinstance(vni, int) or not 0 < vni < 1 << 24:
        errors.append(f"pluginSettings.geneve.vni: {vni!r} is not an integer in 1..16777215")
    return errors


def tunnel_name(node: str) -> str:
    """The guide's per-node name for Geneve state (no kernel link carries it; see docs/overlay.md)."""
    return f"nv_{node}"


class GeneveTunnel(BpfTunnel):
    name = "geneve"
    overhead = wire.OVERHEAD
    programs = layouts.PROGRAMS
    # IPv4 and IPv6 inner packets over an IPv4 or IPv6 underlay (bpf/geneve.c); the node's own
    # traffic to remote pods of the other family than the underlay's has no route (a route cannot
    # take a next hop of the other family): docs/overlay.md
    ip_families = (4, 6)

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)
        if errors := config_errors(ctx.config):
            raise ConfigError("; ".join(errors))
        self.vni = int(ctx.config.pluginSettings.get("geneve", {}).get("vni", wire.VNI))

    def tunnel_entry(self, node: NodeInfo) -> TunnelValue:
        return entries.tunnel_value(self.underlay_ifindex, node.ip, self.vni)

    def write_nodes(self, remotes: list[NodeInfo]) -> None:
        fd = syscall.obj_get(self.programs.pin_path(self.root, "geneve_nodes"))
        try:
            for n in remotes:
                c4, c6 = n.pod_cidr_of(4), n.pod_cidr_of(6)
                net = ipaddress.IPv4Network(c4) if c4 else None
                net6 = ipaddress.IPv6Network(c6) if c6 else None
                hop = ipaddress.ip_address(self.nexthops.get(n.ip, n.ip))
                v = layouts.NodeValue(nexthop=int(hop) if hop.version == 4 else 0,
                                      nexthop6=(u8 * 16).from_buffer_copy(hop.packed if hop.version == 6 else bytes(16)),
                                      pod_cidr=int(net.network_address) if net else 0,
                                      pod_cidr_len=net.prefixlen if net else 0,
                                      pod_cidr6=(u8 * 16).from_buffer_copy(net6.network_address.packed if net6 else bytes(16)),
                                      pod_cidr6_len=net6.prefixlen if net6 else 0)
                syscall.map_update(fd, bytes(layouts.NodeKey(node_ip=node_key(n.ip))), bytes(v))
        finally:
            os.close(fd)

    def forget_node(self, node_ip: str) -> None:
        fd = syscall.obj_get(self.programs.pin_path(self.root, "geneve_nodes"))
        try:
            syscall.map_delete(fd, bytes(layouts.NodeKey(node_ip=node_key(node_ip))))
        finally:
            os.close(fd)
        self.nexthops.pop(node_ip, None)

    def status_row(self, node: NodeInfo) -> dict[str, Any]:
        return {"tunnel": tunnel_name(node.name), "vni": self.vni, "port": wire.PORT,
                "nexthop": self.nexthops.get(node.ip, node.ip)}

    def counters(self) -> dict[str, Any]:
        return {"underlay": self.underlay, "ifindex": self.underlay_ifindex, "underlayMTU": self.underlay_mtu,
                "underlayFamily": self.family,
                "podMTU": self.tunnel_mtu, "overhead": self.overhead, "vni": self.vni,
                "programs": self.installed, "counters": self.programs.counters(self.root)}
