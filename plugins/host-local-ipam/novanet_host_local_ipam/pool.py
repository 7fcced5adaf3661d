"""The address pool: a node PodCIDR minus the addresses a pod must never get."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from novanet_core.backends import BackendContext, ConfigError

# Network, gateway and broadcast are reserved, so anything smaller than a /30 leaves no pod address.
MAX_PREFIX_LEN = 30


@dataclass(frozen=True)
class Pool:
    network: ipaddress.IPv4Network

    @classmethod
    def parse(cls, cidr: str, source: str = "podCIDR") -> Pool:
        """Parse ``cidr``; errors name ``source`` (the config key or node field it came from)."""
        try:
            net = ipaddress.ip_network(str(cidr).strip(), strict=True)
        except ValueError as e:
            raise ConfigError(f"{source}: {cidr!r} is not a CIDR ({e})") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise ConfigError(f"{source}: {cidr!r} is IPv6; the host-local IPAM backend supports IPv4 only")
        if net.prefixlen > MAX_PREFIX_LEN:
            raise ConfigError(
                f"{source}: {cidr!r} is too small: network, gateway and broadcast are reserved, "
                f"so the prefix length must be at most /{MAX_PREFIX_LEN}"
            )
        return cls(net)

    @classmethod
    def from_context(cls, ctx: BackendContext) -> Pool:
        """The node's PodCIDR: the node object wins over the ``podCIDR`` config key."""
        if ctx.node is not None and ctx.node.pod_cidr:
            return cls.parse(ctx.node.pod_cidr, f"podCIDR (of node {ctx.node.name!r})")
        if ctx.config.podCIDR:
            return cls.parse(ctx.config.podCIDR, "podCIDR")
        raise ConfigError(
            "podCIDR: not set and no node PodCIDR known; the host-local IPAM backend needs the node's "
            "PodCIDR (set podCIDR / NOVANET_POD_CIDR or give the node a spec.podCIDR)"
        )

    @property
    def cidr(self) -> str:
        return str(self.network)

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 1

    @property
    def first(self) -> ipaddress.IPv4Address:
        """First address a pod can get (after network and gateway)."""
        return self.network.network_address + 2

    @property
    def last(self) -> ipaddress.IPv4Address:
        """Last address a pod can get (before broadcast)."""
        return self.network.broadcast_address - 1

    @property
    def capacity(self) -> int:
        return self.network.num_addresses - 3

    def contains(self, ip: ipaddress.IPv4Address) -> bool:
        return ip in self.network

    def assignable(self, ip: ipaddress.IPv4Address) -> bool:
        return self.first <= ip <= self.last

    def why_not_assignable(self, ip: ipaddress.IPv4Address) -> str | None:
        if ip not in self.network:
            return f"outside pool {self.cidr}"
        if ip == self.network.network_address:
            return f"the network address of pool {self.cidr}"
        if ip == self.gateway:
            return f"the gateway of pool {self.cidr}"
        if ip == self.network.broadcast_address:
            return f"the broadcast address of pool {self.cidr}"
        return None

    def rotation(self, last_reserved: ipaddress.IPv4Address | None) -> Iterator[ipaddress.IPv4Address]:
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
        for n in range(start, last + 1):
            yield ipaddress.IPv4Address(n)
        for n in range(first, start):
            yield ipaddress.IPv4Address(n)
