"""Address plans for a lab: PodCIDRs carved from the cluster CIDR and node addresses on the underlay.

Both allocators take the explicit values from the spec first (so a node keeps its given range or
address wherever it is listed), then hand out the lowest free block to the rest in spec order.
Errors name the spec field (``nodes[2].podCIDR: ...``).

Each allocator works on one family; the ``*_by_family`` forms run it once per range of a
dual-stack value (``10.42.0.0/16,fd00:42::/48``, novanet_core.ipfamily) and return each node's
entries in that value's order, so the first is the primary family as everywhere else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from novanet_core import ipfamily


class AddressError(ValueError):
    pass


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def mask_field(family: int) -> str:
    return "cluster.nodeCIDRMaskSize" if family == 4 else "cluster.nodeCIDRMaskSizeIPv6"


def carve_pod_cidrs(
    cluster_cidr: str, mask_size: int, nodes: Sequence[tuple[str, str | None]]
) -> dict[str, str]:
    """Map node name -> PodCIDR (a /mask_size inside cluster_cidr unless the node gives its own)."""
    cluster = ipaddress.ip_network(cluster_cidr)
    if mask_size < cluster.prefixlen:
        raise AddressError(
            f"{mask_field(cluster.version)}: /{mask_size} is larger than cluster.clusterCIDR {cluster_cidr}"
        )
    if mask_size > cluster.max_prefixlen - 2:
        raise AddressError(f"{mask_field(cluster.version)}: /{mask_size} leaves no pod addresses in a "
                           f"{ipfamily.family_name(cluster.version)} PodCIDR")
    taken: list[tuple[Net, int]] = []
    out: dict[str, str] = {}
    for i, (name, given) in enumerate(nodes):
        if given is None:
            continue
        net = ipaddress.ip_network(given)
        if not net.subnet_of(cluster):  # type: ignore[arg-type]
            raise AddressError(f"nodes[{i}].podCIDR: {given} is not inside cluster.clusterCIDR {cluster_cidr}")
        for other, j in taken:
            if net.overlaps(other):  # type: ignore[arg-type]
                raise AddressError(f"nodes[{i}].podCIDR: {given} overlaps nodes[{j}].podCIDR {other}")
        taken.append((net, i))
        out[name] = str(net)
    candidates = cluster.subnets(new_prefix=mask_size)
    for i, (name, given) in enumerate(nodes):
        if given is not None:
            continue
        for cand in candidates:
            if not any(cand.overlaps(t) for t, _ in taken):  # type: ignore[arg-type]
                taken.append((cand, i))
                out[name] = str(cand)
                break
        else:
            raise AddressError(
                f"nodes[{i}].podCIDR: cluster.clusterCIDR {cluster_cidr} has no free /{mask_size} left for node {name!r}"
            )
    return out


def carve_pod_cidrs_by_family(cluster_cidrs: str, masks: dict[int, int],
                              nodes: Sequence[tuple[str, str | None]]) -> dict[str, list[str]]:
    """Map node name -> its PodCIDRs, one per range of ``cluster_cidrs`` in that order. A node's
    given ``podCIDR`` may name some families only; the others are carved for it."""
    ranges = ipfamily.split(cluster_cidrs)
    given: list[dict[int, str]] = []
    for i, (_, value) in enumerate(nodes):
        entries = {ipfamily.family_of(c): c for c in ipfamily.split(value)}
        for fam, cidr in entries.items():
            if ipfamily.pick(ranges, fam) is None:
                raise AddressError(f"nodes[{i}].podCIDR: {cidr} is {ipfamily.family_name(fam)} but "
                                   f"cluster.clusterCIDR {cluster_cidrs} has no {ipfamily.family_name(fam)} range")
        given.append(entries)
    out: dict[str, list[str]] = {name: [] for name, _ in nodes}
    for cluster in ranges:
        fam = ipfamily.family_of(cluster)
        carved = carve_pod_cidrs(cluster, masks[fam], [(name, g.get(fam)) for (name, _), g in zip(nodes, given, strict=True)])
        for name, cidr in carved.items():
            out[name].append(cidr)
    return out


def underlay_gateway(underlay_cidr: str) -> str:
    """The underlay bridge's own address: the first host address of the underlay."""
    return str(ipaddress.ip_network(underlay_cidr).network_address + 1)


def underlay_gateways(underlay_cidrs: str) -> list[str]:
    return [underlay_gateway(c) for c in ipfamily.split(underlay_cidrs)]


def _last_host(net: Net) -> int:
    # IPv6 has no broadcast address; its last address is a host like any other
    return int(net.broadcast_address) - (1 if net.version == 4 else 0)


def assign_node_ips(underlay_cidr: str, nodes: Sequence[tuple[str, str | None]]) -> dict[str, str]:
    """Map node name -> underlay address. The first host address belongs to the bridge."""
    net = ipaddress.ip_network(underlay_cidr)
    if net.num_addresses < 4:
        raise AddressError(f"underlay.cidr: {underlay_cidr} is too small (use /30 or larger, /126 for IPv6)")
    bridge = ipaddress.ip_address(underlay_gateway(underlay_cidr))
    used: dict[ipfamily.Address, int] = {}
    out: dict[str, str] = {}
    for i, (name, given) in enumerate(nodes):
        if given is None:
            continue
        ip = ipaddress.ip_address(given)
        if ip.version != net.version or ip not in net or int(ip) in (int(net.network_address), int(net.broadcast_address)):
            raise AddressError(f"nodes[{i}].ip: {given} is not a host address of underlay.cidr {underlay_cidr}")
        if ip == bridge:
            raise AddressError(f"nodes[{i}].ip: {given} is the underlay bridge's own address")
        if ip in used:
            raise AddressError(f"nodes[{i}].ip: {given} is already used by nodes[{used[ip]}]")
        used[ip] = i
        out[name] = str(ip)
    hosts = (ipaddress.ip_address(a) for a in range(int(bridge) + 1, _last_host(net) + 1))
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


def assign_node_ips_by_family(underlay_cidrs: str, nodes: Sequence[tuple[str, str | None]]) -> dict[str, list[str]]:
    """Map node name -> its underlay addresses, one per range of ``underlay_cidrs`` in that order.
    A node's given ``ip`` may name some families only; the others are assigned."""
    ranges = ipfamily.split(underlay_cidrs)
    given: list[dict[int, str]] = []
    for i, (_, value) in enumerate(nodes):
        entries = {ipfamily.family_of(a): a for a in ipfamily.split(value)}
        for fam, ip in entries.items():
            if ipfamily.pick(ranges, fam) is None:
                raise AddressError(f"nodes[{i}].ip: {ip} is {ipfamily.family_name(fam)} but underlay.cidr "
                                   f"{underlay_cidrs} has no {ipfamily.family_name(fam)} range")
        given.append(entries)
    out: dict[str, list[str]] = {name: [] for name, _ in nodes}
    for cidr in ranges:
        fam = ipfamily.family_of(cidr)
        for name, ip in assign_node_ips(cidr, [(n, g.get(fam)) for (n, _), g in zip(nodes, given, strict=True)]).items():
            out[name].append(ip)
    return out


def highest_free(underlay_cidr: str, used: set[str]) -> str:
    """The highest host address of the underlay that is not in ``used`` (routers, the outside host)."""
    net = ipaddress.ip_network(underlay_cidr)
    for a in range(_last_host(net), int(net.network_address), -1):
        h = str(ipaddress.ip_address(a))
        if h not in used:
            return h
    raise AddressError(f"underlay.cidr: {underlay_cidr} has no free address left")
