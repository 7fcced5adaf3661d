"""Which IP families the tunnel backends say they carry, and the agent's check of a node's
PodCIDRs against them (novanet_core.agent.families): with the eBPF datapath, VXLAN and Geneve
carry IPv6 inner packets over an IPv4 underlay (tests/overlay/test_ipv6_cross_node.py proves it
with packets), so a dual-stack cluster is accepted; a carrier serving IPv4 only is refused with
the field to change; an IPv6 node address (IPv6 underlay) is refused by both tunnels."""

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


@pytest.mark.parametrize("tunnel", [VxlanTunnel, GeneveTunnel])
def test_an_ipv6_underlay_is_refused_naming_node_ip(tunnel) -> None:
    with pytest.raises(ConfigError, match=r"^nodeIP: fd00:31::1 is IPv6, but tunnelProtocol"):
        tunnel(_ctx(tunnel.name, node_ip="fd00:31::1"))


def test_a_carrier_without_ipv6_is_refused_naming_cluster_cidr() -> None:
    with pytest.raises(ConfigError) as e:
        families.check(CLUSTER, POD, [("datapath 'ebpf'", (4, 6)), ("routing backend 'hostgw'", (4,))])
    assert str(e.value).startswith(
        "clusterCIDR: fd00:42::/48 is IPv6, but routing backend 'hostgw' serves IPv4 only in this release"
    )
    families.check(CLUSTER[:1], POD[:1], [("routing backend 'hostgw'", (4,))])  # IPv4-only: fine
