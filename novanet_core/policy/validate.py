"""Structural validation of a ``networking.k8s.io/v1`` NetworkPolicy spec.

Mirrors the API server's checks that matter for enforcement (k8s ``ValidateNetworkPolicySpec``),
plus a refusal of unknown keys: a typo such as ``form:`` instead of ``from:`` would otherwise turn a
narrow rule into allow-all without anyone noticing. Every message names the field path, e.g.
``spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 192.168.0.0/16``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from novanet_core.policy.selectors import OPERATORS
from novanet_core.protocols import L4_PROTOCOLS

POLICY_TYPES = ("Ingress", "Egress")
# IANA_SVC_NAME as Kubernetes checks it for named ports.
_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

_SPEC_KEYS = {"podSelector", "policyTypes", "ingress", "egress"}
_SELECTOR_KEYS = {"matchLabels", "matchExpressions"}
_EXPR_KEYS = {"key", "operator", "values"}
_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}
_PORT_KEYS = {"protocol", "port", "endPort"}


class PolicyValidationError(ValueError):
    def __init__(self, policy: str, errors: list[str]):
        self.policy, self.errors = policy, errors
        super().__init__(f"NetworkPolicy {policy} rejected: " + "; ".join(errors))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _unknown(path: str, obj: Mapping[str, Any], allowed: set[str], errs: list[str]) -> None:
    for k in obj:
        if k not in allowed:
            errs.append(f"{path}.{k}: unknown field (expected one of {', '.join(sorted(allowed))})")


def _selector(path: str, sel: Any, errs: list[str]) -> None:
    if sel is None:
        return
    if not isinstance(sel, Mapping):
        errs.append(f"{path}: must be a label selector map")
        return
    _unknown(path, sel, _SELECTOR_KEYS, errs)
    ml = sel.get("matchLabels")
    if ml is not None:
        if not isinstance(ml, Mapping):
            errs.append(f"{path}.matchLabels: must be a map of string to string")
        else:
            for k, v in ml.items():
                if not isinstance(k, str) or not k:
                    errs.append(f"{path}.matchLabels: key {k!r} must be a non-empty string")
                elif not isinstance(v, str):
                    errs.append(f"{path}.matchLabels.{k}: value {v!r} must be a string")
    me = sel.get("matchExpressions")
    if me is None:
        return
    if not isinstance(me, list):
        errs.append(f"{path}.matchExpressions: must be a list")
        return
    for i, e in enumerate(me):
        ep = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            errs.append(f"{ep}: must be a map with key, operator, values")
            continue
        _unknown(ep, e, _EXPR_KEYS, errs)
        if not isinstance(e.get("key"), str) or not e.get("key"):
            errs.append(f"{ep}.key: must be a non-empty string")
        op = e.get("operator")
        if op not in OPERATORS:
            errs.append(f"{ep}.operator: {op!r} is not a valid selector operator ({', '.join(OPERATORS)})")
            continue
        vals = e.get("values")
        if vals is not None and (not isinstance(vals, list) or not all(isinstance(v, str) for v in vals)):
            errs.append(f"{ep}.values: must be a list of strings")
            continue
        if op in ("In", "NotIn") and not vals:
            errs.append(f"{ep}.values: must be non-empty when operator is {op}")
        if op in ("Exists", "DoesNotExist") and vals:
            errs.append(f"{ep}.values: must be empty when operator is {op}")


def _ip_block(path: str, blk: Any, errs: list[str]) -> None:
    if not isinstance(blk, Mapping):
        errs.append(f"{path}: must be a map with cidr and except")
        return
    _unknown(path, blk, {"cidr", "except"}, errs)
    raw = blk.get("cidr")
    try:
        if not isinstance(raw, str):
            raise ValueError
        net = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        errs.append(f"{path}.cidr: {raw!r} is not a valid CIDR")
        return
    exc = blk.get("except")
    if exc is None:
        return
    if not isinstance(exc, list):
        errs.append(f"{path}.except: must be a list of CIDRs")
        return
    for i, e in enumerate(exc):
        ep = f"{path}.except[{i}]"
        try:
            if not isinstance(e, str):
                raise ValueError
            en = ipaddress.ip_network(e, strict=False)
        except ValueError:
            errs.append(f"{ep}: {e!r} is not a valid CIDR")
            continue
        if en.version != net.version:
            errs.append(f"{ep}: {e} is not the same address family as cidr {raw}")
        elif not (en.subnet_of(net) and en.prefixlen > net.prefixlen):  # type: ignore[arg-type]
            errs.append(f"{ep}: {e} is not inside cidr {raw}")


def _peer(path: str, peer: Any, errs: list[str]) -> None:
    if not isinstance(peer, Mapping):
        errs.append(f"{path}: must be a map")
        return
    _unknown(path, peer, _PEER_KEYS, errs)
    present = [k for k in _PEER_KEYS if peer.get(k) is not None]
    if not present:
        errs.append(f"{path}: must specify podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in present and len(present) > 1:
        errs.append(f"{path}: ipBlock may not be combined with podSelector or namespaceSelector")
    _selector(f"{path}.podSelector", peer.get("podSelector"), errs)
    _selector(f"{path}.namespaceSelector", peer.get("namespaceSelector"), errs)
    if peer.get("ipBlock") is not None:
        _ip_block(f"{path}.ipBlock", peer["ipBlock"], errs)


def _port(path: str, p: Any, errs: list[str]) -> None:
    if not isinstance(p, Mapping):
        errs.append(f"{path}: must be a map with protocol, port, endPort")
        return
    _unknown(path, p, _PORT_KEYS, errs)
    proto = p.get("protocol", "TCP")
    if proto is not None and proto not in L4_PROTOCOLS:
        errs.append(f"{path}.protocol: {proto!r} is not a supported protocol ({', '.join(L4_PROTOCOLS)})")
    port = p.get("port")
    end = p.get("endPort")
    if port is not None:
        if _is_int(port):
            if not 1 <= port <= 65535:
                errs.append(f"{path}.port: {port} is not in 1..65535")
        elif isinstance(port, str):
            if port.isdigit():
                errs.append(f"{path}.port: {port!r} is a number written as a string; write it unquoted")
            elif not (1 <= len(port) <= 15 and _SVC_NAME.match(port) and "--" not in port
                      and re.search("[a-z]", port)):
                errs.append(f"{path}.port: {port!r} is not a valid port name (IANA_SVC_NAME, 1..15 chars)")
        else:
            errs.append(f"{path}.port: must be a port number or a port name")
    if end is None:
        return
    if not _is_int(end) or not 1 <= end <= 65535:
        errs.append(f"{path}.endPort: {end!r} is not a port number 1..65535")
    elif port is None:
        errs.append(f"{path}.endPort: may not be set without port")
    elif isinstance(port, str):
        errs.append(f"{path}.endPort: may not be used with a named port ({port})")
    elif _is_int(port) and end < port:
        errs.append(f"{path}.endPort: {end} is less than port {port}")


def _rules(path: str, rules: Any, peer_key: str, errs: list[str]) -> None:
    if rules is None:
        return
    if not isinstance(rules, list):
        errs.append(f"{path}: must be a list of rules")
        return
    for i, r in enumerate(rules):
        rp = f"{path}[{i}]"
        if r is None:
            continue  # `- {}` written as `-` in YAML: an empty rule
        if not isinstance(r, Mapping):
            errs.append(f"{rp}: must be a map with {peer_key} and ports")
            continue
        _unknown(rp, r, {peer_key, "ports"}, errs)
        peers = r.get(peer_key)
        if peers is not None:
            if not isinstance(peers, list):
                errs.append(f"{rp}.{peer_key}: must be a list of peers")
            else:
                for j, peer in enumerate(peers):
                    _peer(f"{rp}.{peer_key}[{j}]", peer, errs)
        ports = r.get("ports")
        if ports is not None:
            if not isinstance(ports, list):
                errs.append(f"{rp}.ports: must be a list")
            else:
                for j, p in enumerate(ports):
                    _port(f"{rp}.ports[{j}]", p, errs)


def validate_spec(spec: Any) -> list[str]:
    """All problems found in ``spec`` (empty list = valid)."""
    errs: list[str] = []
    if not isinstance(spec, Mapping):
        return ["spec: must be a map"]
    _unknown("spec", spec, _SPEC_KEYS, errs)
    _selector("spec.podSelector", spec.get("podSelector"), errs)
    pt = spec.get("policyTypes")
    if pt is not None:
        if not isinstance(pt, list):
            errs.append("spec.policyTypes: must be a list")
        else:
            for i, t in enumerate(pt):
                if t not in POLICY_TYPES:
                    errs.append(f"spec.policyTypes[{i}]: {t!r} is not Ingress or Egress")
            if len(set(map(str, pt))) != len(pt):
                errs.append("spec.policyTypes: duplicate entries")
    _rules("spec.ingress", spec.get("ingress"), "from", errs)
    _rules("spec.egress", spec.get("egress"), "to", errs)
    return errs


def check_spec(policy_key: str, spec: Any) -> None:
    """Raise :class:`PolicyValidationError` listing every problem, if there is any."""
    errs = validate_spec(spec)
    if errs:
        raise PolicyValidationError(policy_key, errs)
