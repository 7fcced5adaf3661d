"""A validated NetworkPolicy spec turned into plain, hashable values (no cluster state yet).

Kubernetes defaulting is applied here, once: ``policyTypes`` omitted (or empty) means Ingress, plus
Egress when the spec has at least one egress rule (apiserver ``SetDefaults_NetworkPolicySpec``);
``protocol`` omitted means TCP. ``from``/``to``/``ports`` omitted or ``[]`` both mean "any".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from novanet_core.policy.selectors import LabelSelector, parse_selector
from novanet_core.policy.validate import check_spec
from novanet_core.state.model import NetworkPolicy


@dataclass(frozen=True)
class PortSpec:
    protocol: str
    port: int | str | None  # None = every port of the protocol; str = a named container port
    end_port: int | None = None


@dataclass(frozen=True)
class PeerSpec:
    kind: str  # "pods" or "cidr"
    # pods: namespace_selector None = the policy's own namespace; pod_selector None = every pod.
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    cidr: str | None = None
    excepts: tuple[str, ...] = ()
    path: str = ""


@dataclass(frozen=True)
class RuleSpec:
    direction: str  # "ingress" or "egress"
    index: int
    peers: tuple[PeerSpec, ...]  # empty = any peer
    ports: tuple[PortSpec, ...]  # empty = any port, any protocol

    @property
    def origin(self) -> str:
        return f"{self.direction}[{self.index}]"

    @property
    def named_ports(self) -> bool:
        return any(isinstance(p.port, str) for p in self.ports)


@dataclass(frozen=True)
class ParsedPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    ingress: tuple[RuleSpec, ...] | None  # None = the policy does not cover ingress
    egress: tuple[RuleSpec, ...] | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _ports(raw: Any) -> tuple[PortSpec, ...]:
    out = []
    for p in raw or ():
        out.append(PortSpec(p.get("protocol") or "TCP", p.get("port"), p.get("endPort")))
    return tuple(out)


def _peers(raw: Any, path: str) -> tuple[PeerSpec, ...]:
    out = []
    for j, p in enumerate(raw or ()):
        pp = f"{path}[{j}]"
        blk = p.get("ipBlock")
        if blk is not None:
            out.append(PeerSpec("cidr", cidr=blk["cidr"], excepts=tuple(blk.get("except") or ()), path=pp))
            continue
        ps, ns = p.get("podSelector"), p.get("namespaceSelector")
        out.append(
            PeerSpec(
                "pods",
                pod_selector=None if ps is None else parse_selector(ps),
                namespace_selector=None if ns is None else parse_selector(ns),
                path=pp,
            )
        )
    return tuple(out)


def _rules(raw: Any, direction: str, peer_key: str) -> tuple[RuleSpec, ...]:
    out = []
    for i, r in enumerate(raw or ()):
        r = r or {}
        out.append(
            RuleSpec(direction, i, _peers(r.get(peer_key), f"spec.{direction}[{i}].{peer_key}"),
                     _ports(r.get("ports")))
        )
    return tuple(out)


def parse_policy(policy: NetworkPolicy) -> ParsedPolicy:
    """Validate and parse; raises ``PolicyValidationError`` naming every bad field."""
    spec: Mapping[str, Any] = policy.spec
    check_spec(policy.key, spec)
    types = list(spec.get("policyTypes") or ())
    if not types:
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return ParsedPolicy(
        namespace=policy.namespace,
        name=policy.name,
        pod_selector=parse_selector(spec.get("podSelector")),
        ingress=_rules(spec.get("ingress"), "ingress", "from") if "Ingress" in types else None,
        egress=_rules(spec.get("egress"), "egress", "to") if "Egress" in types else None,
    )
