"""The routing state NovaNet wants FRR to hold, built from the config and the node list.

The same dataclasses describe what FRR holds (parsed from ``show running-config`` in
:mod:`novanet_frr_bgp.frrconf`), so reconciling is comparing two values of one type.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from novanet_core.types import NodeInfo
from novanet_frr_bgp.settings import FrrBgpSettings


@dataclass(frozen=True)
class Neighbor:
    address: str
    remote_as: int
    description: str | None = None
    password: str | None = None
    bfd: bool = False
    bfd_profile: str | None = None
    ebgp_multihop: int | None = None


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
    networks: set[str] = field(default_factory=set)


@dataclass
class RoutingState:
    """The parts of an FRR configuration NovaNet manages."""

    bgp: BgpInstance | None = None
    bfd_profiles: dict[str, BfdProfile] = field(default_factory=dict)


def auto_asn(ip: str, base: int = 64512) -> int:
    """The original's scheme: base + third octet × 256 + fourth octet (unique within a /16)."""
    o = ipaddress.IPv4Address(ip).packed
    return base + o[2] * 256 + o[3]


def node_asn(ip: str, settings: FrrBgpSettings) -> int:
    return settings.asn if isinstance(settings.asn, int) else auto_asn(ip, settings.asnBase)


def desired_state(local: NodeInfo, remotes: list[NodeInfo], s: FrrBgpSettings, advertise: bool = True) -> RoutingState:
    profile = s.bfdProfile if s.bfd.enabled else None
    bgp = BgpInstance(
        asn=node_asn(local.ip, s),
        router_id=local.ip,
        ebgp_requires_policy=False,  # pod routes carry no policy: the fabric trusts the nodes
        keepalive=s.timers.keepalive,
        hold=s.timers.hold,
        graceful_restart=s.gracefulRestart.enabled,
        preserve_fw_state=s.gracefulRestart.enabled,
        restart_time=s.gracefulRestart.restartTime,
        stalepath_time=s.gracefulRestart.stalePathTime,
        networks={str(ipaddress.ip_network(local.pod_cidr))} if advertise else set(),
    )
    if s.fullMesh:
        for n in remotes:
            if n.ip == local.ip:
                continue
            bgp.neighbors[n.ip] = Neighbor(address=n.ip, remote_as=node_asn(n.ip, s), description=f"novanet node {n.name}",
                                           bfd=profile is not None, bfd_profile=profile)
    for p in s.peers:
        use_bfd = s.bfd.enabled if p.bfd is None else p.bfd
        bgp.neighbors[p.address] = Neighbor(address=p.address, remote_as=p.asn, description=p.description,
                                            password=p.password, bfd=use_bfd,
                                            bfd_profile=s.bfdProfile if use_bfd else None,
                                            ebgp_multihop=p.ebgpMultihop)
    profiles = {}
    if any(n.bfd for n in bgp.neighbors.values()):
        profiles[s.bfdProfile] = BfdProfile(s.bfdProfile, s.bfd.receiveInterval, s.bfd.transmitInterval,
                                            s.bfd.detectMultiplier)
    return RoutingState(bgp=bgp, bfd_profiles=profiles)
