"""The routing state NovaNet wants FRR to hold, built from the config and the node list.

The same dataclasses describe what FRR holds (parsed from ``show running-config`` in
:mod:`novanet_frr_bgp.frrconf`), so reconciling is comparing two values of one type.

Families: a PodCIDR is advertised only in a family the node has an underlay address of (its
``ips``), because a route's next hop must be an address of the PodCIDR's family (FRR 8.4 puts the
outgoing interface's global IPv6 address in an IPv6 route learned over an IPv4 session). Two
nodes that both have IPv4 addresses peer over IPv4, and the session also carries IPv6 unicast
when both have IPv6 addresses; nodes with IPv6 addresses only peer over IPv6.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from novanet_core.ipfamily import family_of
from novanet_core.types import NodeInfo
from novanet_frr_bgp.settings import FrrBgpSettings

log = logging.getLogger("novanet.routing.frr")


@dataclass(frozen=True)
class Neighbor:
    address: str
    remote_as: int
    description: str | None = None
    password: str | None = None
    bfd: bool = False
    bfd_profile: str | None = None
    ebgp_multihop: int | None = None
    # activated in address-family ipv6 unicast (IPv4 unicast is FRR's default for every neighbor)
    ipv6: bool = False


@dataclass(frozen=True)
class BfdProfile:
    name: str
    receive_interval: int = 300
    transmit_interval: int = 300
    detect_multiplier: int = 3


@dataclass
class BgpInstance:
    asn: int
    router_id: str | None = None
    ebgp_requires_policy: bool = False
    keepalive: int = 3
    hold: int = 9
    graceful_restart: bool = False
    # F-bit: this node's forwarding state survives a restart of FRR (the sidecar's zebra retains
    # its kernel routes), so peers keep our stale routes until our End-of-RIB.
    preserve_fw_state: bool = False
    restart_time: int = 120
    stalepath_time: int = 360
    neighbors: dict[str, Neighbor] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)  # both families; each goes in its own address-family


@dataclass
class RoutingState:
    """The parts of an FRR configuration NovaNet manages."""

    bgp: BgpInstance | None = None
    bfd_profiles: dict[str, BfdProfile] = field(default_factory=dict)


def auto_asn(ip: str, base: int = 64512) -> int:
    """The original's scheme: base + third octet × 256 + fourth octet (unique within a /16); for an
    IPv6 address the same, from its last two bytes."""
    o = ipaddress.ip_address(ip).packed
    return base + o[-2] * 256 + o[-1]


def underlay_ip(node: NodeInfo) -> str:
    """The address a node's ASN and router-id derive from: its IPv4 one, else its IPv6 one."""
    return node.ip_of(4) or node.ip_of(6) or node.ip


def router_id(node: NodeInfo) -> str:
    """The node's IPv4 address; a node with IPv6 addresses only gets the last four bytes of its
    address (BGP identifiers are 32-bit numbers, written as IPv4 addresses)."""
    ip = ipaddress.ip_address(underlay_ip(node))
    return str(ip) if ip.version == 4 else str(ipaddress.IPv4Address(ip.packed[-4:]))


def node_asn(node: NodeInfo, settings: FrrBgpSettings) -> int:
    return settings.asn if isinstance(settings.asn, int) else auto_asn(underlay_ip(node), settings.asnBase)


def carried_families(node: NodeInfo) -> tuple[int, ...]:
    """The families whose PodCIDRs this node can advertise: those it has an underlay address of."""
    return tuple(sorted({family_of(ip) for ip in node.ips}))


def session(local: NodeInfo, remote: NodeInfo) -> tuple[str, bool] | None:
    """The address to peer with ``remote`` at, and whether the session carries IPv6 unicast; None
    when the two nodes have no underlay family in common."""
    v6 = bool(local.ip_of(6) and remote.ip_of(6))
    if local.ip_of(4) and remote.ip_of(4):
        return remote.ip_of(4), v6  # type: ignore[return-value]
    if v6:
        return remote.ip_of(6), True  # type: ignore[return-value]
    return None


def desired_state(local: NodeInfo, remotes: list[NodeInfo], s: FrrBgpSettings, advertise: bool = True) -> RoutingState:
    profile = s.bfdProfile if s.bfd.enabled else None
    families = carried_families(local)
    bgp = BgpInstance(
        asn=node_asn(local, s),
        router_id=router_id(local),
        ebgp_requires_policy=False,  # pod routes carry no policy: the fabric trusts the nodes
        keepalive=s.timers.keepalive,
        hold=s.timers.hold,
        graceful_restart=s.gracefulRestart.enabled,
        preserve_fw_state=s.gracefulRestart.enabled,
        restart_time=s.gracefulRestart.restartTime,
        stalepath_time=s.gracefulRestart.stalePathTime,
        networks={str(ipaddress.ip_network(c)) for c in local.pod_cidrs if family_of(c) in families}
        if advertise else set(),
    )
    local_ips = set(local.ips)
    if s.fullMesh:
        for n in remotes:
            if n.name == local.name or set(n.ips) & local_ips:
                continue
            peering = session(local, n)
            if peering is None:
                log.warning("node %s shares no underlay family with this node (%s vs %s): not peered",
                            n.name, ",".join(n.ips), ",".join(local.ips))
                continue
            addr, v6 = peering
            bgp.neighbors[addr] = Neighbor(address=addr, remote_as=node_asn(n, s), description=f"novanet node {n.name}",
                                           bfd=profile is not None, bfd_profile=profile, ipv6=v6)
    for p in s.peers:
        use_bfd = s.bfd.enabled if p.bfd is None else p.bfd
        bgp.neighbors[p.address] = Neighbor(address=p.address, remote_as=p.asn, description=p.description,
                                            password=p.password, bfd=use_bfd,
                                            bfd_profile=s.bfdProfile if use_bfd else None,
                                            ebgp_multihop=p.ebgpMultihop, ipv6=6 in families)
    profiles = {}
    if any(n.bfd for n in bgp.neighbors.values()):
        profiles[s.bfdProfile] = BfdProfile(s.bfdProfile, s.bfd.receiveInterval, s.bfd.transmitInterval,
                                            s.bfd.detectMultiplier)
    return RoutingState(bgp=bgp, bfd_profiles=profiles)
