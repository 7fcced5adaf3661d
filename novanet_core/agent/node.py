"""This node's facts, worked out once when the agent starts: name, IPs, PodCIDRs, underlay.

Backends get them in their :class:`~novanet_core.backends.BackendContext` (``node``,
``underlay``, ``pod_mtu()``) instead of looking them up again.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable

from pyroute2 import IPRoute

from novanet_core import ipfamily
from novanet_core.backends import ConfigError
from novanet_core.config.models import NovaNetConfig
from novanet_core.state.model import ClusterState
from novanet_core.types import NodeInfo, Underlay


def resolve_node(config: NovaNetConfig, state: ClusterState, discover_ip: Callable[[], str | None]) -> NodeInfo:
    """Name from ``nodeName`` (else the hostname); IPs and PodCIDRs (one per family, primary
    first) from config, else the Node object in the state source; the IP last from
    ``discover_ip`` (the ``novanet_node_ip`` hook)."""
    name = config.nodeName or os.uname().nodename
    node_obj = state.nodes.get(name)
    ips = config.node_ips or (list(node_obj.internal_ips) if node_obj else [])
    if not ips:
        found = discover_ip()
        ips = [found] if found else []
    if not ips:
        raise ConfigError("nodeIP: not set (NOVANET_NODE_IP) and could not be discovered")
    cidrs = config.pod_cidrs or (list(node_obj.pod_cidrs) if node_obj else [])
    if not cidrs:
        raise ConfigError(f"podCIDR: not set and Node {name!r} has no spec.podCIDR in the state source")
    try:
        ipfamily.check_inside([ipaddress.ip_network(c) for c in cidrs],
                              [ipaddress.ip_network(c) for c in config.cluster_cidrs], "podCIDR", "clusterCIDR")
    except ValueError as e:
        raise ConfigError(f"podCIDR: {e}") from None
    if config.routingMode == "native":
        # Routes to a PodCIDR go via the owning node's address of that family: BGP next hops.
        for c in cidrs:
            fam = ipfamily.family_of(c)
            if ipfamily.pick(ips, fam) is None:
                raise ConfigError(f"nodeIP: node {name!r} has no {ipfamily.family_name(fam)} address "
                                  f"({ipfamily.join(ips)}), but routingMode native needs one to route its "
                                  f"{ipfamily.family_name(fam)} PodCIDR {c}")
    return NodeInfo(name=name, ip=ips[0], pod_cidr=cidrs[0], pod_cidrs=list(cidrs), ips=list(ips))


def resolve_underlay(config: NovaNetConfig, node_ip: str) -> tuple[Underlay | None, str]:
    """The underlay interface, or None and why (a message naming ``underlayInterface``)."""
    with IPRoute() as ipr:
        name = config.underlayInterface or _interface_holding(ipr, node_ip)
        if not name:
            return None, f"underlayInterface: not set and no interface holds the node IP {node_ip}"
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None, f"underlayInterface: {name!r} does not exist"
        mtu = ipr.get_links(idx[0])[0].get_attr("IFLA_MTU") or 1500
    return Underlay(name=name, ifindex=idx[0], mtu=mtu), ""


def _interface_holding(ipr: IPRoute, ip: str) -> str | None:
    for a in ipr.get_addr(family=socket.AF_INET6 if ":" in ip else socket.AF_INET):
        if a.get_attr("IFA_ADDRESS") == ip:
            links = ipr.get_links(a["index"])
            return links[0].get_attr("IFLA_IFNAME") if links else None
    return None
