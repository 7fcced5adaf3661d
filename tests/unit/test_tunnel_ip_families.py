"""Which IP families the tunnel backends say they carry, and the agent's check of a node's
PodCIDRs against them (novanet_core.agent.families): with the eBPF datapath, VXLAN and Geneve
carry IPv6 inner packets over an IPv4 underlay (tests/overlay/test_ipv6_cross_node.py proves it
with packets), so a dual-stack cluster is accepted; a carrier serving IPv4 only is refused with
the field to change. An IPv6 node address puts the tunnel on an IPv6 underlay (20 bytes more
overhead); only VXLAN's routes-only mode refuses it, naming the field."""

from __future__ import annotations

import pytest
from novanet_geneve.backend import GeneveTunnel
from novanet_vxlan.backend import VxlanTunnel

from novanet_core.agent import families
from novanet_core.backends import BackendContext, ConfigError
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import NodeInfo

CLUSTER = ["10.42.0.0/16", "fd00:42::/48"]
POD = ["10.42.7.0/24", "fd00:42:0:7::/64"]


def _ctx(protocol: str, node_ip: str = "172.31.250.1") -> BackendContext:
    cfg = NovaNetConfig(datapath="ebpf", routingMode="overlay", tunnelProtocol=protocol)
    return BackendContext(config=cfg, component="agent", node=NodeInfo("n1", node_ip, POD[0], pod_cidrs=POD))


@pytest.mark.parametrize("tunnel", [VxlanTunnel, GeneveTunnel])
def test_ebpf_tunnels_carry_both_families_and_a_dual_stack_node_is_accepted(tunnel) -> None:
    t = tunnel(_ctx(tunnel.name))
    assert t.ip_families == (4, 6)
    families.check(
        CLUSTER, POD, [("datapath 'ebpf'", (4, 6)), (f"tunnelProtocol {tunnel.name!r}", t.ip_families)]
    )


def test_vxlan_in_bpf_mode_too() -> None:
    assert VxlanTunnel(_ctx("vxlan")).bpf is True


@pytest.mark.parametrize(("tunnel", "v4", "v6"), [(VxlanTunnel, 50, 70), (GeneveTunnel, 58, 78)])
def test_the_overhead_follows_the_underlay_family(tunnel, v4: int, v6: int) -> None:
    assert tunnel(_ctx(tunnel.name)).overhead == v4
    t = tunnel(_ctx(tunnel.name, node_ip="fd00:31::1"))
    assert (t.family, t.overhead) == (6, v6)
    # a dual-stack node is on the family it lists first
    node = NodeInfo("n1", "fd00:31::1", POD[0], pod_cidrs=POD, ips=["fd00:31::1", "172.31.250.1"])
    cfg = NovaNetConfig(datapath="ebpf", routingMode="overlay", tunnelProtocol=tunnel.name)
    assert tunnel(BackendContext(config=cfg, component="agent", node=node)).family == 6


def test_vxlan_routes_only_refuses_an_ipv6_underlay_naming_node_ip() -> None:
    cfg = NovaNetConfig(datapath="kernel", routingMode="overlay", tunnelProtocol="vxlan")
    ctx = BackendContext(
        config=cfg, component="agent", node=NodeInfo("n1", "fd00:31::1", POD[1], pod_cidrs=POD[1:])
    )
    with pytest.raises(
        ConfigError,
        match=r"^nodeIP: fd00:31::1 is IPv6: tunnelProtocol 'vxlan' runs over an IPv6 "
        r"underlay with its BPF programs only \(datapath: ebpf",
    ):
        VxlanTunnel(ctx)


def test_a_carrier_without_ipv6_is_refused_naming_cluster_cidr() -> None:
    with pytest.raises(ConfigError) as e:
        families.check(CLUSTER, POD, [("datapath 'ebpf'", (4, 6)), ("routing backend 'hostgw'", (4,))])
    assert str(e.value).startswith(
        "clusterCIDR: fd00:42::/48 is IPv6, but routing backend 'hostgw' serves IPv4 only in this release"
    )
    families.check(CLUSTER[:1], POD[:1], [("routing backend 'hostgw'", (4,))])  # IPv4-only: fine
