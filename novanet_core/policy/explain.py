"""``policy explain``: why a connection ``from -> to:port/protocol`` is allowed or denied.

Compiles the whole cluster (every pod, not only this node's: both sides of a connection may live
on different nodes) into a throwaway engine with its own identity allocator, so that the agent's
own reference counts are never touched, and walks the two directions the way the datapath does:
the source's egress, then the destination's ingress. For each side: the policies that select it
(why it is isolated), the rules that admit this connection (policy, rule, peer, ports), or the
isolation that denies it. The datapath's own reading of its maps is added by the datapath
plugin's CLI (``novanetctl policy explain``), which compares the two.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from novanet_core.identity import IdentityAllocator
from novanet_core.policy.compiled import DirectionPolicy, Rule
from novanet_core.policy.engine import PolicyEngine
from novanet_core.protocols import L4_PROTOCOLS
from novanet_core.state.model import ClusterState


class ExplainError(ValueError):
    """A bad request; the message starts with the parameter's name."""


def _rule(r: Rule) -> dict[str, Any]:
    return {"policy": r.policy, "origin": r.origin, "peer": str(r.peer),
            "ports": "any" if r.ports is None else ",".join(str(p) for p in r.ports)}


def _direction(d: DirectionPolicy, peer_identity: int | None, peer_ip: str | None, protocol: str,
               port: int) -> dict[str, Any]:
    res = d.check(peer_identity, peer_ip, protocol, port)
    out: dict[str, Any] = {"isolated": d.isolated, "selected_by": list(d.selected_by), "allowed": res.allowed}
    if not d.isolated:
        out["why"] = "not isolated: no NetworkPolicy selects it for this direction"
        return out
    admitting = [_rule(r) for r in d.rules if r.matches(peer_identity, peer_ip, protocol, port)]
    out["admitted_by"] = admitting
    out["rules"] = len(d.rules)
    isolation = ", ".join(d.selected_by) or "defaultDeny"
    if admitting:
        out["why"] = f"isolated by {isolation}; admitted by " + ", ".join(f"{a['policy']} {a['origin']}"
                                                                          for a in admitting)
    else:
        out["why"] = f"isolated by {isolation}: none of its {len(d.rules)} rules admits this connection"
    return out


def _family(x: str) -> int | None:
    try:
        return ipaddress.ip_address(x).version
    except ValueError:
        return None


def explain(state: ClusterState, default_deny: bool, src: str, dst: str, port: int, protocol: str = "TCP",
            nodes: dict[str, str] | None = None, family: int | None = None) -> dict[str, Any]:
    """``src``/``dst``: ``namespace/pod`` or an IP address; ``nodes``: node name -> node IP (optional).

    The connection's address family: ``family`` (4 or 6), else that of a side given as an address,
    else the primary one of the source pod. A pod named by ``namespace/pod`` takes part with its
    address of that family (a dual-stack pod is one identity, but ipBlocks see the address)."""
    protocol = protocol.upper()
    if family is not None and family not in (4, 6):
        raise ExplainError(f"family: {family!r} is not 4 or 6")
    given = {f for f in (_family(src), _family(dst)) if f is not None}
    if family is not None and given - {family}:
        raise ExplainError(f"family: an address given is not IPv{family}")
    if len(given) > 1:
        raise ExplainError("from/to: an IPv4 and an IPv6 address are not one connection")
    family = family or next(iter(given), None)
    if protocol not in L4_PROTOCOLS:
        raise ExplainError(f"protocol: {protocol!r} is not one of {', '.join(L4_PROTOCOLS)}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ExplainError(f"port: {port!r} is not a port 0..65535")
    eng = PolicyEngine(default_deny=default_deny, node=None, identities=IdentityAllocator())
    eng.load(state)

    def end(x: str, what: str) -> dict[str, Any]:
        nonlocal family
        pod = eng.pods.get(x) or eng.pod_by_ip(x)
        if pod is None:
            if "/" in x:
                raise ExplainError(f"{what}: no pod {x!r} in the cluster state")
            return {"pod": None, "ip": x, "identity": None, "node": None}
        if _family(x):
            ip: str | None = x
        else:
            fam = family or (_family(pod.ip) if pod.ip else None)
            ip = next((a for a in pod.ips if _family(a) == fam), None)
            if ip is None and pod.ips:
                raise ExplainError(f"{what}: pod {x} has no IPv{fam} address")
        family = family or (_family(ip) if ip else None)
        return {"pod": pod.key, "ip": ip, "identity": eng.identity_of(pod.key), "node": pod.node,
                "labels": dict(pod.labels)}

    s, d = end(src, "from"), end(dst, "to")
    if s["pod"] is None and d["pod"] is None:
        raise ExplainError("from/to: at least one side must be a pod")
    out: dict[str, Any] = {"from": s, "to": d, "protocol": protocol, "port": port, "defaultDeny": default_deny,
                           "policies": sorted(eng.policies), "rejected": dict(eng.rejected)}
    sides = []
    if s["pod"]:
        ep = eng.endpoints[s["pod"]]
        out["egress"] = _direction(ep.egress, d["identity"], d["ip"], protocol, port)
        out["egress"]["decided_on"] = s["node"]
        sides.append(("egress", s))
    if d["pod"]:
        ep = eng.endpoints[d["pod"]]
        out["ingress"] = _direction(ep.ingress, s["identity"], s["ip"], protocol, port)
        out["ingress"]["decided_on"] = d["node"]
        sides.append(("ingress", d))
    for name, who in sides:
        if nodes and who["node"] in nodes:
            out[name]["node_ip"] = nodes[who["node"]]
    denied = [n for n, _ in sides if not out[n]["allowed"]]
    out["allowed"] = not denied
    out["verdict"] = "ALLOWED" if not denied else f"DENIED ({', '.join(denied)})"
    return out
