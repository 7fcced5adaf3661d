"""The policy section's wire form: compiled NetworkPolicy between the agent and the dataplane.

The types are the compiler's own (:class:`EndpointPolicy`, :class:`DirectionPolicy`,
:class:`Rule`, :class:`PortRange` and the peers in :mod:`novanet_core.policy.compiled`); this
module turns them into JSON and back. The agent encodes, the dataplane host decodes and hands the
datapath typed objects, so a datapath plugin never parses JSON. One endpoint::

    {"ip": "10.42.0.5", "pod": "ns/name", "identity": 4711,
     "ingress": {"isolated": true, "selected_by": ["ns/pol"],
                 "rules": [{"peer": {"identities": [4712]} | {"any": true}
                                    | {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]},
                            "ports": null | [{"protocol": "TCP", "first": 80, "last": 80}],
                            "policy": "ns/pol", "origin": "ingress[0]"}]},
     "egress": {...}}

``ports: null`` means every port of every protocol. Decoding validates everything and raises
:class:`WireError` naming the field path (``endpoints[2].ingress.rules[0].ports[1].protocol``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from novanet_core.policy.compiled import (
    AnyPeer,
    CidrPeer,
    DirectionPolicy,
    EndpointPolicy,
    IdentityPeer,
    Peer,
    PortRange,
    Rule,
)
from novanet_core.protocols import L4_PROTOCOLS


class WireError(ValueError):
    """Malformed wire input; the message starts with the field path."""


@dataclass(frozen=True)
class PolicyUpdate:
    """One ``dp.policy.apply``: endpoints to (re)program, IPs to drop, or a full replace."""

    upserts: tuple[EndpointPolicy, ...] = ()
    deletes: tuple[str, ...] = ()
    full: bool = False  # every endpoint not in ``upserts`` loses its policy


# ---------------------------------------------------------------------- encode


def _peer(p: Peer) -> dict[str, Any]:
    if isinstance(p, AnyPeer):
        return {"any": True}
    if isinstance(p, IdentityPeer):
        return {"identities": sorted(p.identities)}
    return {"cidr": p.cidr, "except": list(p.excepts)}


def _rule(r: Rule) -> dict[str, Any]:
    ports = None if r.ports is None else [{"protocol": p.protocol, "first": p.first, "last": p.last}
                                          for p in r.ports]
    return {"peer": _peer(r.peer), "ports": ports, "policy": r.policy, "origin": r.origin}


def _direction(d: DirectionPolicy) -> dict[str, Any]:
    return {"isolated": d.isolated, "selected_by": list(d.selected_by), "rules": [_rule(r) for r in d.rules]}


def encode_endpoint(ep: EndpointPolicy, ip: str) -> dict[str, Any]:
    """One local endpoint's compiled policy for its address ``ip`` (a pod may have several)."""
    return {"ip": ip, "pod": ep.pod, "identity": ep.identity, "ingress": _direction(ep.ingress),
            "egress": _direction(ep.egress)}


def encode_update(upserts: Sequence[dict[str, Any]], deletes: Sequence[str], full: bool) -> dict[str, Any]:
    """``dp.policy.apply`` params from already encoded endpoints."""
    return {"endpoints": list(upserts), "delete": sorted(set(deletes)), "full": full}


# ---------------------------------------------------------------------- decode


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise WireError(f"{where}: {v!r} is not an object")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise WireError(f"{where}: {v!r} is not a list")
    return v


def _str(d: dict[str, Any], key: str, where: str) -> str:
    v = d.get(key, "")
    if not isinstance(v, str):
        raise WireError(f"{where}.{key}: {v!r} is not a string")
    return v


def _ports(v: Any, where: str) -> tuple[PortRange, ...] | None:
    if v is None:
        return None
    out = []
    for i, p in enumerate(_list(v, where)):
        w = f"{where}[{i}]"
        p = _obj(p, w)
        proto = p.get("protocol")
        if proto not in L4_PROTOCOLS:
            raise WireError(f"{w}.protocol: {proto!r} is not one of {', '.join(L4_PROTOCOLS)}")
        first, last = p.get("first"), p.get("last")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (first, last)) \
                or not 0 <= first <= last <= 65535:
            raise WireError(f"{w}: first/last {first!r}..{last!r} is not a port range within 0..65535")
        out.append(PortRange(proto, first, last))
    return tuple(out)


def _decode_peer(v: Any, where: str) -> Peer:
    p = _obj(v, where)
    if p.get("any") is True:
        return AnyPeer()
    if "identities" in p:
        ids = p["identities"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**32
                                                for i in ids):
            raise WireError(f"{where}.identities: {ids!r} is not a list of identities 1..2^32-1")
        return IdentityPeer(frozenset(ids))
    if "cidr" in p:
        cidr, excepts = p["cidr"], p.get("except") or []
        if not isinstance(cidr, str) or not isinstance(excepts, list) or not all(isinstance(e, str) for e in excepts):
            raise WireError(f"{where}: cidr must be a string and except a list of strings")
        try:
            nets = [ipaddress.ip_network(c, strict=False) for c in (cidr, *excepts)]
        except ValueError as e:
            raise WireError(f"{where}: bad CIDR ({e})") from None
        for i, n in enumerate(nets[1:]):
            if n.version != nets[0].version or not n.subnet_of(nets[0]):  # type: ignore[arg-type]
                raise WireError(f"{where}.except[{i}]: {excepts[i]} is not inside cidr {cidr}")
        return CidrPeer(cidr, tuple(excepts))
    raise WireError(f"{where}: needs one of any, identities, cidr")


def _decode_rule(v: Any, where: str) -> Rule:
    r = _obj(v, where)
    return Rule(_decode_peer(r.get("peer"), f"{where}.peer"), _ports(r.get("ports"), f"{where}.ports"),
                _str(r, "policy", where), _str(r, "origin", where))


def _decode_direction(v: Any, where: str) -> DirectionPolicy:
    d = _obj(v, where)
    isolated = d.get("isolated", False)
    if not isinstance(isolated, bool):
        raise WireError(f"{where}.isolated: {isolated!r} is not a boolean")
    rules = tuple(_decode_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(_list(d.get("rules") or [],
                                                                                       f"{where}.rules")))
    sel = _list(d.get("selected_by") or [], f"{where}.selected_by")
    if not all(isinstance(s, str) for s in sel):
        raise WireError(f"{where}.selected_by: must be a list of policy names")
    return DirectionPolicy(isolated, rules, tuple(sel))


def decode_endpoint(v: Any, where: str = "endpoint") -> EndpointPolicy:
    """The inverse of :func:`encode_endpoint`; the address is in ``EndpointPolicy.ip``."""
    d = _obj(v, where)
    ip = d.get("ip")
    try:
        ipaddress.ip_address(str(ip))
    except ValueError:
        raise WireError(f"{where}.ip: {ip!r} is not an IP address") from None
    ident = d.get("identity", 0)
    if isinstance(ident, bool) or not isinstance(ident, int) or not 0 <= ident < 2**32:
        raise WireError(f"{where}.identity: {ident!r} is not an identity 0..2^32-1")
    return EndpointPolicy(pod=_str(d, "pod", where), identity=ident, ip=str(ip), node=None,
                          ingress=_decode_direction(d.get("ingress", {}), f"{where}.ingress"),
                          egress=_decode_direction(d.get("egress", {}), f"{where}.egress"))


def decode_update(params: Any) -> PolicyUpdate:
    """``dp.policy.apply`` params (``endpoints``, ``delete``, ``full``) as a :class:`PolicyUpdate`."""
    p = _obj(params, "params")
    full = p.get("full", False)
    if not isinstance(full, bool):
        raise WireError(f"full: {full!r} is not a boolean")
    dels = _list(p.get("delete") or [], "delete")
    if not all(isinstance(d, str) for d in dels):
        raise WireError("delete: must be a list of IP strings")
    ups = tuple(decode_endpoint(e, f"endpoints[{i}]") for i, e in enumerate(_list(p.get("endpoints") or [],
                                                                                  "endpoints")))
    return PolicyUpdate(ups, tuple(dels), full)
