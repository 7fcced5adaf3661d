"""Address plans for a lab: PodCIDRs carved from the cluster CIDR and node addresses on the underlay.

Both allocators take the explicit values from the spec first (so a node keeps its given range or
address wherever it is listed), then hand out the lowest free block to the rest in spec order.
Errors name the spec field (``nodes[2].podCIDR: ...``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence


class AddressError(ValueError):
    pass


def carve_pod_cidrs(
    cluster_cidr: str, mask_size: int, nodes: Sequence[tuple[str, str | None]]
) -> dict[str, str]:
    """Map node name -> PodCIDR (a /mask_size inside cluster_cidr unless the node gives its own)."""
    cluster = ipaddress.IPv4Network(cluster_cidr)
    if mask_size < cluster.prefixlen:
        raise AddressError(
            f"cluster.nodeCIDRMaskSize: /{mask_size} is larger than cluster.clusterCIDR {cluster_cidr}"
        )
    taken: list[tuple[ipaddress.IPv4Network, int]] = []
    out: dict[str, str] = {}
    for i, (name, given) in enumerate(nodes):
        if given is None:
            continue
        net = ipaddress.IPv4Network(given)
        if not net.subnet_of(cluster):
            raise AddressError(f"nodes[{i}].podCIDR: {given} is not inside cluster.clusterCIDR {cluster_cidr}")
        for other, j in taken:
            if net.overlaps(other):
                raise AddressError(f"nodes[{i}].podCIDR: {given} overlaps nodes[{j}].podCIDR {other}")
        taken.append((net, i))
        out[name] = str(net)
    candidates = cluster.subnets(new_prefix=mask_size)
    for i, (name, given) in enumerate(nodes):
        if given is not None:
            continue
        for cand in candidates:
            if not any(cand.overlaps(t) for t, _ in taken):
                taken.append((cand, i))
                out[name] = str(cand)
                break
        else:
            raise AddressError(
                f"nodes[{i}].podCIDR: cluster.clusterCIDR {cluster_cidr} has no free /{mask_size} left for node {name!r}"
            )
    return out


def underlay_gateway(underlay_cidr: str) -> str:
    """The underlay bridge's own address: the first host address of the underlay."""
    return str(next(ipaddress.IPv4Network(underlay_cidr).hosts()))


def assign_node_ips(underlay_cidr: str, nodes: Sequence[tuple[str, str | None]]) -> dict[str, str]:
    """Map node name -> underlay address. The first host address belongs to the bridge."""
    net = ipaddress.IPv4Network(underlay_cidr)
    if net.num_addresses < 4:
        raise AddressError(f"underlay.cidr: {underlay_cidr} is too small (use /30 or larger)")
    bridge = ipaddress.IPv4Address(underlay_gateway(underlay_cidr))
    used: dict[ipaddress.IPv4Address, int] = {}
    out: dict[str, str] = {}
    for i, (name, given) in enumerate(nodes):
        if given is None:
            continue
        ip = ipaddress.IPv4Address(given)
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise AddressError(f"nodes[{i}].ip: {given} is not a host address of underlay.cidr {underlay_cidr}")
        if ip == bridge:
            raise AddressError(f"nodes[{i}].ip: {given} is the underlay bridge's own address")
        if ip in used:
            raise AddressError(f"nodes[{i}].ip: {given} is already used by nodes[{used[ip]}]")
        used[ip] = i
        out[name] = str(ip)
    hosts = (h for h in net.hosts() if h != bridge)
    for i, (name, given) in enumerate(nodes):
        if given is not None:
            continue
        for h in hosts:
            if h not in used:
                used[h] = i
                out[name] = str(h)
                break
        else:
            raise AddressError(f"underlay.cidr: {underlay_cidr} has no free address left for node {name!r} (nodes[{i}])")
    return out


def highest_free(underlay_cidr: str, used: set[str]) -> str:
    """The highest host address of the underlay that is not in ``used`` (routers, the outside host)."""
    for h in reversed(list(ipaddress.IPv4Network(underlay_cidr).hosts())):
        if str(h) not in used:
            return str(h)
    raise AddressError(f"underlay.cidr: {underlay_cidr} has no free address left")
