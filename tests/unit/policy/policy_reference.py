"""A deliberately naive reference evaluator of NetworkPolicy v1, written from the API reference.

Shares no code with ``novanet_core.policy``: it reads raw spec dicts and decides one packet at a
time by walking every policy. Spec text it follows (networking.k8s.io/v1 NetworkPolicySpec):

* podSelector selects pods in the policy's namespace; ``{}`` selects all of them.
* policyTypes: if unset, Ingress always, Egress if the policy has any egress rules.
* A pod is isolated for a direction if any policy selecting it has that direction in policyTypes;
  then a connection is allowed only if some rule of some such policy allows it.
* A rule matches if its ports match AND its peers match; an empty or missing list matches all.
* A peer: ipBlock (CIDR minus except) | podSelector (policy namespace) | namespaceSelector (all pods
  of matching namespaces) | both (pods matching podSelector in matching namespaces).
* A port: protocol (default TCP) + port (number, or name of a container port of the destination
  pod with that protocol; missing = all ports) + endPort (range up to it).
* A connection needs the source's egress and the destination's ingress to allow it.

NovaNet's ``defaultDeny`` (docs/policy.md): every direction that applies must not deny, and at
least one policy must explicitly allow the connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RPod:
    namespace: str
    name: str
    labels: dict[str, str]
    ip: str | None
    ports: list[tuple[str, int, str]] = field(default_factory=list)  # (name, port, protocol)
    ip6: str | None = None  # a dual-stack pod's IPv6 address (``ip`` is then its IPv4 one)

    def address(self, family: int) -> str | None:
        if family == 6:
            return self.ip6 if self.ip6 else (self.ip if self.ip and ":" in self.ip else None)
        return self.ip if self.ip and ":" not in self.ip else None


@dataclass
class RWorld:
    namespaces: dict[str, dict[str, str]]  # name -> labels (without the automatic name label)
    pods: list[RPod]
    policies: list[tuple[str, Mapping[str, Any]]]  # (namespace, spec)


def selector_matches(sel: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if sel is None:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        has = key in labels
        if op == "In" and not (has and labels[key] in vals):
            return False
        if op == "NotIn" and has and labels[key] in vals:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def ns_labels(world: RWorld, ns: str) -> dict[str, str]:
    labels = dict(world.namespaces.get(ns, {}))
    labels["kubernetes.io/metadata.name"] = ns
    return labels


def policy_types(spec: Mapping[str, Any]) -> list[str]:
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def peer_matches(world: RWorld, policy_ns: str, peer: Mapping[str, Any], other: RPod | str, family: int = 4) -> bool:
    """``family``: of the connection, so the address of a dual-stack pod that an ipBlock sees."""
    if "ipBlock" in peer:
        ip = other if isinstance(other, str) else other.address(family)
        if ip is None:
            return False
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)
        if addr.version != net.version or addr not in net:
            return False
        return not any(addr in ipaddress.ip_network(e, strict=False) for e in peer["ipBlock"].get("except") or [])
    if isinstance(other, str):
        return False  # selectors only ever pick pods
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], ns_labels(world, other.namespace)):
            return False
    elif other.namespace != policy_ns:
        return False
    return selector_matches(peer.get("podSelector"), other.labels)


def port_matches(ports: list[Mapping[str, Any]] | None, protocol: str, port: int, dst: RPod | str) -> bool:
    if not ports:
        return True
    for p in ports:
        proto = p.get("protocol") or "TCP"
        if proto != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, int):
            if want <= port <= (p.get("endPort") or want):
                return True
        elif isinstance(dst, RPod):
            if any(n == want and pr == protocol and num == port for n, num, pr in dst.ports):
                return True
    return False


def direction_verdict(world: RWorld, pod: RPod, direction: str, other: RPod | str, protocol: str, port: int,
                      dst: RPod | str, family: int = 4) -> bool | None:
    """None = not isolated in this direction; else whether some rule allows."""
    isolated = False
    key, peer_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for ns, spec in world.policies:
        if ns != pod.namespace or not selector_matches(spec.get("podSelector") or {}, pod.labels):
            continue
        if direction not in policy_types(spec):
            continue
        isolated = True
        for rule in spec.get(key) or []:
            rule = rule or {}
            peers = rule.get(peer_key) or []
            if port_matches(rule.get("ports"), protocol, port, dst) and (
                not peers or any(peer_matches(world, ns, p, other, family) for p in peers)
            ):
                return True
    return False if isolated else None


def allowed(world: RWorld, src: RPod | str, dst: RPod | str, protocol: str, port: int,
            default_deny: bool = False, family: int = 4) -> bool:
    """A connection of ``family`` (4 or 6) between pods (by their address of that family) or
    addresses outside the cluster."""
    eg = direction_verdict(world, src, "Egress", dst, protocol, port, dst, family) if isinstance(src, RPod) else None
    ing = direction_verdict(world, dst, "Ingress", src, protocol, port, dst, family) if isinstance(dst, RPod) else None
    if eg is False or ing is False:
        return False
    if default_deny:
        return eg is True or ing is True
    return True
