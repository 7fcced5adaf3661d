"""The agent's local API: the CNI socket methods and the novanetctl socket methods."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from novanet_core.agent import policy_sync
from novanet_core.agent.cni import CniFailure
from novanet_core.agent.cni_stats import CniStats
from novanet_core.agent.dataplane_client import DataplaneUnavailable
from novanet_core.agent.service import Agent
from novanet_core.api.protocol import ApiError
from novanet_core.api.router import ApiRouter
from novanet_core.cni import protocol as cni
from novanet_core.services import sync as service_sync


def _cni(fn: Any, method: str, stats: CniStats) -> Any:
    def handler(params: dict[str, Any]) -> Any:
        try:
            cni.validate_request(params, method)
        except cni.CniError as e:
            raise ApiError("invalid_params", e.msg, {"cniCode": e.code, "detail": e.details}) from None
        t0 = time.perf_counter()
        ok = False
        try:
            res = fn(params)
            ok = True
            return res
        except CniFailure as e:
            raise ApiError("cni", e.msg, {"cniCode": e.code, "detail": e.detail}) from None
        except KeyError as e:
            raise ApiError("invalid_params", f"missing parameter {e.args[0]!r}", {"cniCode": 4}) from None
        finally:
            stats.record(method.upper(), time.perf_counter() - t0, ok)

    handler.__doc__ = fn.__doc__
    return handler


def cni_router(agent: Agent) -> ApiRouter:
    r = ApiRouter()
    s = agent.cni_stats
    r.add("cni.add", _cni(agent.cni.add, "add", s), doc="CNI ADD")
    r.add("cni.del", _cni(agent.cni.delete, "del", s), doc="CNI DEL")
    r.add("cni.check", _cni(agent.cni.check, "check", s), doc="CNI CHECK")
    r.add("cni.status", _cni(lambda p: agent.cni.status(), "status", s), doc="CNI STATUS")
    r.add("cni.gc", _cni(agent.cni.gc, "gc", s), doc="CNI GC")
    return r


def control_router(agent: Agent) -> ApiRouter:
    r = ApiRouter()
    r.add("status", lambda p: agent.status(), doc="node status (novanetctl status)")
    r.add("endpoints.list", _on(agent, _endpoints))
    r.add("identity.list", _on(agent, _identities))
    r.add("plugins.list", lambda p: agent.host.info(), doc="discovered plugins")
    r.add("ipam.list", lambda p: [a.to_dict() for a in agent.ipam.list()], doc="IPAM allocations")
    r.add("ipam.status", lambda p: agent.ipam.status(), doc="IPAM pool status")
    r.add("tunnels.list", lambda p: agent.tunnel.status() if agent.tunnel is not None else [], doc="tunnels")
    r.add("config.get", lambda p: agent.config.model_dump(), doc="effective config")
    r.add("reconcile", lambda p: agent.reconcile(), doc="reconcile live state against desired state now")
    r.add("methods", lambda p: r.methods(), doc="list API methods")
    r.add("cni.timings", _on(agent, _cni_timings))
    r.add("state.timings", _on(agent, _state_timings))
    r.add("dataplane.call", _on(agent, _dp_proxy))
    policy_sync.register_api(r, agent)  # policy.list, policy.status, policy.drops
    service_sync.register_api(r, agent)  # services.list, services.status
    return r


def _on(agent: Agent, fn: Any) -> Any:
    """``fn(agent, params)`` as a handler of ``params``, keeping its docstring (the ``methods`` listing)."""
    def handler(p: dict[str, Any]) -> Any:
        return fn(agent, p)
    handler.__doc__ = fn.__doc__
    return handler


def _endpoints(agent: Agent, p: dict[str, Any]) -> Any:
    """Endpoints from the live datapath, joined with the agent's records: one row per address (a
    dual-stack pod has a row per family, each naming the pod), IPv4 before IPv6."""
    records = {ip: e for e in agent.store.all() for ip in e.ips}
    try:
        live = agent.dataplane.call("dp.endpoint.list")
    except DataplaneUnavailable as e:
        raise ApiError("unavailable", str(e)) from None
    out = []
    for d in live:
        ep = records.get(d["ip"])
        out.append({
            **d,
            "namespace": ep.namespace if ep else d.get("namespace", ""),
            "pod": ep.pod if ep else d.get("pod", ""),
            "containerID": ep.container_id if ep else "",
            "inAgent": ep is not None,
        })
    in_datapath = {d["ip"] for d in live}
    for ip, ep in records.items():
        if ip not in in_datapath:
            out.append({"ip": ip, "identity": ep.identity, "host_ifname": ep.host_ifname, "namespace": ep.namespace,
                        "pod": ep.pod, "containerID": ep.container_id, "local": True, "inAgent": True,
                        "inDatapath": False})
    return sorted(out, key=lambda d: _address_order(d["ip"]))


def _address_order(ip: str) -> tuple[int, int]:
    """IPv4 first, then IPv6, each numerically (a string sort puts 10.0.0.10 before 10.0.0.9)."""
    a = ipaddress.ip_address(ip)
    return a.version, int(a)


def _identities(agent: Agent, p: dict[str, Any]) -> Any:
    """Identities as the live datapath uses them (endpoint map entries), with their label sets."""
    try:
        live = agent.dataplane.call("dp.endpoint.list")
    except DataplaneUnavailable as e:
        raise ApiError("unavailable", str(e)) from None
    seen: dict[int, dict[str, Any]] = {}
    for d in live:
        ident = d.get("identity", 0)
        row = seen.get(ident)
        if row is None:
            known = agent.identities.labels_of(ident)
            if known is None:
                ep = agent.store.by_ip(d["ip"])
                rem = agent.nodes.remotes.get(d["ip"])
                pod = agent.state.pods.get(f"{rem.namespace}/{rem.pod}") if rem else None
                known = (ep.namespace, ep.labels) if ep else (rem.namespace, dict(pod.labels) if pod else {}) if rem else ("", {})
            row = seen[ident] = {"id": ident, "namespace": known[0], "labels": dict(known[1]), "podCount": 0,
                                 "remotePodCount": 0}
        row["podCount" if d.get("local", True) else "remotePodCount"] += 1
    return sorted(seen.values(), key=lambda r: r["id"])


def _cni_timings(agent: Agent, p: dict[str, Any]) -> dict[str, Any]:
    """Median per-step milliseconds of the recent CNI ADDs (ipam, interface, datapath, record)."""
    rows = list(agent.cni.timings)
    out: dict[str, Any] = {"count": len(rows)}
    for step in ("ipam", "interface", "datapath", "record"):
        vals = sorted(r[step] for r in rows)
        out[step] = round(vals[len(vals) // 2] * 1e3, 2) if vals else None
    return out


def _state_timings(agent: Agent, p: dict[str, Any]) -> dict[str, Any]:
    """Per kind: count, median and p99 milliseconds of the recent state events (event taken in
    -> endpoints, remotes, policy and services applied)."""
    by_kind: dict[str, list[float]] = {}
    for kind, sec in list(agent.event_timings):
        by_kind.setdefault(kind, []).append(sec)
    out = {}
    for kind, vals in sorted(by_kind.items()):
        vals.sort()
        out[kind] = {"count": len(vals), "p50_ms": round(vals[len(vals) // 2] * 1e3, 3),
                     "p99_ms": round(vals[min(len(vals) - 1, int(len(vals) * 0.99))] * 1e3, 3)}
    return out


def _dp_proxy(agent: Agent, p: dict[str, Any]) -> Any:
    """Forward a call to the dataplane (plugin commands that need the datapath)."""
    method = p.get("method")
    if not isinstance(method, str):
        raise ApiError("invalid_params", "method: must be a string")
    try:
        return agent.dataplane.call(method, p.get("params") or {})
    except DataplaneUnavailable as e:
        raise ApiError("unavailable", str(e)) from None
