"""The address pool: a node PodCIDR minus the addresses a pod must never get.

IPv4 reserves the network address, the gateway (first host) and the broadcast address; IPv6 has
no broadcast, so it reserves the network address (the subnet-router anycast address) and the
gateway only, as the reference CNI host-local plugin does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from novanet_core.backends import BackendContext, ConfigError

# The smallest pool that still leaves pod addresses after the reserved ones.
MAX_PREFIX_LEN = {4: 30, 6: 126}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Pool:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @classmethod
    def parse(cls, cidr: str, source: str = "podCIDR") -> Pool:
        """Parse ``cidr``; errors name ``source`` (the config key or node field it came from)."""
        try:
            net = ipaddress.ip_network(str(cidr).strip(), strict=True)
        except ValueError as e:
            raise ConfigError(f"{source}: {cidr!r} is not a CIDR ({e})") from None
        limit = MAX_PREFIX_LEN[net.version]
        if net.prefixlen > limit:
            reserved = "network, gateway and broadcast are" if net.version == 4 else "network and gateway are"
            raise ConfigError(
                f"{source}: {cidr!r} is too small: {reserved} reserved, "
                f"so the prefix length must be at most /{limit}"
            )
        return cls(net)

    @classmethod
    def from_context(cls, ctx: BackendContext) -> list[Pool]:
        """The node's PodCIDRs (one per family, primary first): the node object wins over the
        ``podCIDR`` config key."""
        if ctx.node is not None and ctx.node.pod_cidrs:
            return cls.parse_all(ctx.node.pod_cidrs, f"podCIDR (of node {ctx.node.name!r})")
        if ctx.config.podCIDR:
            return cls.parse_all(ctx.config.pod_cidrs, "podCIDR")
        raise ConfigError(
            "podCIDR: not set and no node PodCIDR known; the host-local IPAM backend needs the node's "
            "PodCIDR (set podCIDR / NOVANET_POD_CIDR or give the node a spec.podCIDR)"
        )

    @classmethod
    def parse_all(cls, cidrs: list[str], source: str) -> list[Pool]:
        pools = [cls.parse(c, source) for c in cidrs]
        if len({p.version for p in pools}) != len(pools):
            raise ConfigError(f"{source}: {', '.join(cidrs)}: at most one pool per IP family")
        return pools

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def cidr(self) -> str:
        return str(self.network)

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    @property
    def gateway(self) -> Address:
        return self.network.network_address + 1

    @property
    def first(self) -> Address:
        """First address a pod can get (after network and gateway)."""
        return self.network.network_address + 2

    @property
    def last(self) -> Address:
        """Last address a pod can get (before broadcast; IPv6 has none)."""
        return self.network.broadcast_address - (1 if self.version == 4 else 0)

    @property
    def capacity(self) -> int:
        return self.network.num_addresses - (3 if self.version == 4 else 2)

    def contains(self, ip: Address) -> bool:
        return ip.version == self.version and ip in self.network

    def assignable(self, ip: Address) -> bool:
        return ip.version == self.version and self.first <= ip <= self.last  # type: ignore[operator]

    def why_not_assignable(self, ip: Address) -> str | None:
        if not self.contains(ip):
            return f"outside pool {self.cidr}"
        if ip == self.network.network_address:
            return f"the network address of pool {self.cidr}"
        if ip == self.gateway:
            return f"the gateway of pool {self.cidr}"
        if self.version == 4 and ip == self.network.broadcast_address:
            return f"the broadcast address of pool {self.cidr}"
        return None

    def rotation(self, last_reserved: Address | None) -> Iterator[Address]:
        """Every assignable address once, starting just after ``last_reserved`` and wrapping.

        Starting after the last handed-out address (not at the lowest free one) keeps a
        just-released IP out of circulation as long as possible, so a new pod does not inherit
        traffic or conntrack state meant for the one that just left.
        """
        first, last = int(self.first), int(self.last)
        start = first
        if last_reserved is not None and self.assignable(last_reserved):
            start = int(last_reserved) + 1
            if start > last:
                start = first
        make = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        for n in range(start, last + 1):
            yield make(n)
        for n in range(first, start):
            yield make(n)
