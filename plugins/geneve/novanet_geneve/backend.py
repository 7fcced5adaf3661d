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
from novanet_core.bpf.layouts import TunnelValue
from novanet_core.bpf.tunnel import BpfTunnel
from novanet_core.bpf.tunnel.entries import ip_num
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

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)
        if errors := config_errors(ctx.config):
            raise ConfigError("; ".join(errors))
        self.vni = int(ctx.config.pluginSettings.get("geneve", {}).get("vni", wire.VNI))

    def tunnel_entry(self, node: NodeInfo) -> TunnelValue:
        return TunnelValue(ifindex=self.underlay_ifindex, remote_ip=ip_num(node.ip), vni=self.vni)

    def write_nodes(self, remotes: list[NodeInfo]) -> None:
        fd = syscall.obj_get(self.programs.pin_path(self.root, "geneve_nodes"))
        try:
            for n in remotes:
                net = ipaddress.IPv4Network(n.pod_cidr)
                v = layouts.NodeValue(nexthop=ip_num(self.nexthops.get(n.ip, n.ip)),
                                      pod_cidr=int(net.network_address), pod_cidr_len=net.prefixlen)
                syscall.map_update(fd, bytes(layouts.NodeKey(node_ip=ip_num(n.ip))), bytes(v))
        finally:
            os.close(fd)

    def forget_node(self, node_ip: str) -> None:
        fd = syscall.obj_get(self.programs.pin_path(self.root, "geneve_nodes"))
        try:
            syscall.map_delete(fd, bytes(layouts.NodeKey(node_ip=ip_num(node_ip))))
        finally:
            os.close(fd)
        self.nexthops.pop(node_ip, None)

    def status_row(self, node: NodeInfo) -> dict[str, Any]:
        return {"tunnel": tunnel_name(node.name), "vni": self.vni, "port": wire.PORT,
                "nexthop": self.nexthops.get(node.ip, node.ip)}

    def counters(self) -> dict[str, Any]:
        return {"underlay": self.underlay, "ifindex": self.underlay_ifindex, "underlayMTU": self.underlay_mtu,
                "podMTU": self.tunnel_mtu, "overhead": self.overhead, "vni": self.vni,
                "programs": self.installed, "counters": self.programs.counters(self.root)}
