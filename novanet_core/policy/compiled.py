"""The compiled policy form handed to datapaths: per local endpoint and direction.

Designed so a BPF datapath can reproduce :meth:`DirectionPolicy.check` with two lookups:
an identity/LPM lookup for the peer and a (protocol, port-range) match. For every endpoint and
direction the whole meaning is: *if not isolated, allow; else allow iff some rule matches*.
Rules never deny; ``except`` blocks are carved out of a CIDR peer, not separate deny rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True, order=True)
class PortRange:
    protocol: str  # TCP, UDP or SCTP
    first: int  # 0..65535; (proto, 0, 65535) = every port of that protocol
    last: int

    def matches(self, protocol: str, port: int) -> bool:
        return protocol == self.protocol and self.first <= port <= self.last

    def __str__(self) -> str:
        if self.first == 0 and self.last == 65535:
            return f"{self.protocol}/*"
        if self.first == self.last:
            return f"{self.protocol}/{self.first}"
        return f"{self.protocol}/{self.first}-{self.last}"


@dataclass(frozen=True)
class AnyPeer:
    """Every source/destination: pods, hosts and the outside world."""

    def matches(self, identity: int | None, ip: str | None) -> bool:
        return True

    def __str__(self) -> str:
        return "any"


@dataclass(frozen=True)
class IdentityPeer:
    """Pods, by security identity (namespace + labels). Never matches non-pod addresses."""

    identities: frozenset[int]

    def matches(self, identity: int | None, ip: str | None) -> bool:
        return identity is not None and identity in self.identities

    def __str__(self) -> str:
        return "identities " + ",".join(str(i) for i in sorted(self.identities))


@dataclass(frozen=True)
class CidrPeer:
    """An address block minus ``excepts``; matches by IP, pod or not (as upstream e2e expects)."""

    cidr: str
    excepts: tuple[str, ...] = ()
    _net: ipaddress.IPv4Network | ipaddress.IPv6Network = field(init=False, repr=False, compare=False)
    _exc: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_net", ipaddress.ip_network(self.cidr, strict=False))
        object.__setattr__(self, "_exc", tuple(ipaddress.ip_network(e, strict=False) for e in self.excepts))

    def matches(self, identity: int | None, ip: str | None) -> bool:
        return ip is not None and self.contains(ipaddress.ip_address(ip))

    def contains(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if addr.version != self._net.version or addr not in self._net:
            return False
        return not any(addr in e for e in self._exc)

    def __str__(self) -> str:
        return self.cidr + (" except " + ",".join(self.excepts) if self.excepts else "")


Peer = Union[AnyPeer, IdentityPeer, CidrPeer]  # noqa: UP007  (a runtime alias, not an annotation)


@dataclass(frozen=True)
class Rule:
    """One allow rule. ``ports is None`` = all ports of all protocols.

    ``policy`` is ``namespace/name``; ``origin`` says where the rule came from:
    ``ingress[i]``/``egress[i]`` of that policy, or ``mirror:egress[i]``/``mirror:ingress[i]`` for
    rules that default-deny mode copies from the peer's policy (see docs/policy.md).
    """

    peer: Peer
    ports: tuple[PortRange, ...] | None
    policy: str
    origin: str

    def matches(self, identity: int | None, ip: str | None, protocol: str, port: int) -> bool:
        if self.ports is not None and not any(p.matches(protocol, port) for p in self.ports):
            return False
        return self.peer.matches(identity, ip)

    def describe(self) -> str:
        ports = "any port" if self.ports is None else ",".join(str(p) for p in self.ports) or "no port"
        return f"{self.peer} {ports} ({self.policy} {self.origin})"


@dataclass(frozen=True)
class DirectionResult:
    allowed: bool
    isolated: bool
    allowed_by: tuple[str, ...]  # policies with a matching rule
    selected_by: tuple[str, ...]  # policies that isolate this direction


@dataclass(frozen=True)
class DirectionPolicy:
    isolated: bool
    rules: tuple[Rule, ...] = ()
    # Policies whose podSelector picks the endpoint for this direction (why it is isolated).
    selected_by: tuple[str, ...] = ()

    def check(self, identity: int | None, ip: str | None, protocol: str, port: int) -> DirectionResult:
        if not self.isolated:
            return DirectionResult(True, False, (), self.selected_by)
        by = tuple(sorted({r.policy for r in self.rules if r.matches(identity, ip, protocol, port)}))
        return DirectionResult(bool(by), True, by, self.selected_by)


OPEN = DirectionPolicy(isolated=False)


@dataclass(frozen=True)
class EndpointPolicy:
    """Everything the datapath needs to enforce policy for one pod."""

    pod: str  # namespace/name
    identity: int
    ip: str | None
    node: str | None
    ingress: DirectionPolicy
    egress: DirectionPolicy

    def direction(self, name: str) -> DirectionPolicy:
        return self.ingress if name == "ingress" else self.egress
