"""NetworkPolicy in the agent: compile cluster state (novanet_core.policy) and program the datapath.

One :class:`PolicyEngine` per agent, scoped to this node's pods and sharing the agent's identity
allocator (so the numbers in compiled rules are the ones the endpoints map carries). The whole
state is compiled once, at start; after that every state event yields a *delta* (only the local
endpoints whose compiled policy changed), and only those endpoints are sent to the dataplane's
``dp.policy.apply`` (wire form: novanet_core.policy.wire), whose backend writes only the map
entries that differ. A new endpoint's policy travels with the endpoint itself (``dp.endpoint.add``).
A full resend (not a recompile) happens when the dataplane (re)connects. A datapath without the
policy section answers ``unsupported``: the syncer then stops sending and reports why.

Programming latency = from the moment the agent takes a state event in to the moment the dataplane
acknowledges the maps written (it bumps the policy revision before answering, so established
flows re-decide from then on). It is exported as ``novanet_agent_policy_programming_seconds``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.agent.endpoints import EndpointStore
from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from novanet_core.identity import IdentityAllocator
from novanet_core.policy import AnyPeer, CidrPeer, IdentityPeer, PolicyEngine, Rule
from novanet_core.policy.wire import encode_endpoint, encode_update
from novanet_core.state.model import ClusterState, StateEvent
from novanet_core.types import Endpoint

if TYPE_CHECKING:
    from novanet_core.agent.service import Agent

log = logging.getLogger("novanet.policy")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


# ---------------------------------------------------------------------- the syncer


class PolicySync:
    """Reads the agent's ``state`` and endpoint records; writes only to the dataplane."""

    def __init__(self, state: ClusterState, store: EndpointStore, identities: IdentityAllocator,
                 dataplane: DataplaneClient, node_name: str, default_deny: bool):
        self.state, self.store, self.identities, self.dataplane = state, store, identities, dataplane
        # The engine reads the agent's state (one owner of cluster state, which takes in each event
        # before the engine does) and counts identities in the agent's allocator.
        self.engine = PolicyEngine(default_deny=default_deny, node=node_name, identities=identities, logger=log,
                                   state=state)
        self.supported = True  # False when the datapath answers unsupported (e.g. datapath: kernel)
        self.unsupported_reason = ""
        self.dirty = False  # a send failed: the next resync sends everything
        self.programmed: dict[str, set[str]] = {}  # pod key -> IPs we sent compiled policy for
        self.histogram = Histogram("novanet_agent_policy_programming_seconds",
                                   "State change taken in by the agent -> policy maps written and acknowledged "
                                   "by the dataplane", buckets=LATENCY_BUCKETS, registry=None)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=2048)
        self.last_apply: dict[str, Any] = {}
        self.compile_seconds = 0.0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ entry points (agent)
    def start(self) -> None:
        """Full compile of the agent's state, then a full replace in the datapath."""
        with self._lock:
            t0 = time.perf_counter()
            self.engine.load(self.state)
            self.compile_seconds = time.perf_counter() - t0
            log.info("policy: compiled %d policies for %d local endpoints in %.1f ms (%d rejected)",
                     len(self.engine.policies), len(self.engine.endpoints), self.compile_seconds * 1000,
                     len(self.engine.rejected))
            self.resync()

    def apply_event(self, ev: StateEvent, received: float | None = None, old: Any = None) -> None:
        """Feed one state event, after the agent applied it to its own state and endpoints;
        ``old``: the object the event replaced in that state (None: there was none)."""
        t0 = received if received is not None else time.perf_counter()
        with self._lock:
            delta = self.engine.apply(ev, old)
            if not delta:
                return
            ups, dels = [], []
            for key, ep in delta.items():
                ips = self._ips_of(key)
                if ep is None:
                    dels.extend(self.programmed.pop(key, set()))
                    continue
                gone = self.programmed.get(key, set()) - set(ips)
                dels.extend(gone)
                ups.extend(encode_endpoint(ep, ip) for ip in ips)
                if ips:
                    self.programmed[key] = set(ips)
            if ups or dels:
                self._send(ups, dels, False, t0, f"{ev.type} {ev.kind} {getattr(ev.obj, 'key', '')}")

    def policy_for(self, ep: Endpoint) -> dict[str, Any] | None:
        """CNI ADD: the compiled policy to send with the new endpoint in ``dp.endpoint.add`` (so it
        is in force before the pod can send), or None: pod unknown to the state source (the
        datapath's defaultDeny fallback applies), or a datapath without the policy section."""
        with self._lock:
            cp = self.engine.endpoints.get(f"{ep.namespace}/{ep.pod}")
            return encode_endpoint(cp, ep.ip) if cp is not None and self.supported else None

    def endpoint_added(self, ep: Endpoint, result: dict[str, Any], t0: float) -> None:
        """CNI ADD done: ``result`` is the dataplane's answer to ``dp.endpoint.add``."""
        if not result.get("policy"):
            return
        with self._lock:
            key = f"{ep.namespace}/{ep.pod}"
            self.programmed.setdefault(key, set()).update(ep.ips)
            self._record(f"endpoint {key}", t0, result.get("policyApplied") or {}, 1, 0, False)

    def endpoint_removed(self, ep: Endpoint) -> None:
        with self._lock:
            key = f"{ep.namespace}/{ep.pod}"
            ips = self.programmed.get(key)
            if ips is not None:
                ips.difference_update(ep.ips)
                if not ips:
                    del self.programmed[key]
            self._send([], list(ep.ips), False, time.perf_counter(), f"endpoint {key} removed")

    def resync(self) -> None:
        """Send the current compiled form for every local endpoint (full replace, no recompile)."""
        with self._lock:
            ups = []
            self.programmed = {}
            for key, cp in self.engine.endpoints.items():
                ips = self._ips_of(key)
                if ips:
                    self.programmed[key] = set(ips)
                    ups.extend(encode_endpoint(cp, ip) for ip in ips)
            self.supported, self.unsupported_reason = True, ""
            self._send(ups, [], True, time.perf_counter(), "resync")

    # ------------------------------------------------------------------ internals
    def _ips_of(self, pod_key: str) -> list[str]:
        ns, _, name = pod_key.partition("/")
        return sorted(ip for e in self.store.by_pod(ns, name) for ip in e.ips)  # every family's address

    def _send(self, ups: list[dict[str, Any]], dels: list[str], full: bool, t0: float, what: str) -> None:
        if not self.supported:
            return
        if self.dirty and not full:
            # an earlier change never reached the datapath: send everything instead of this delta
            return self.resync()
        try:
            res = self.dataplane.call("dp.policy.apply", encode_update(ups, dels, full))
        except DataplaneUnavailable as e:
            self.dirty = True
            log.warning("policy: %s not programmed (%s); resending everything when the dataplane is back", what, e)
            return
        except ApiError as e:
            if e.code == "unsupported":
                self.supported, self.unsupported_reason = False, e.message
                log.warning("policy: NetworkPolicy is not enforced: %s", e.message)
            else:
                self.dirty = True
                log.error("policy: datapath refused %s: %s", what, e.message)
            return
        self.dirty = False
        self._record(what, t0, res, len(ups), len(set(dels)), full)

    def _record(self, what: str, t0: float, res: dict[str, Any], ups: int, dels: int, full: bool) -> None:
        dt = time.perf_counter() - t0
        self.histogram.observe(dt)
        written = sum(res.get(k, 0) for k in ("rules_added", "rules_removed", "ep_written", "ep_removed",
                                              "cidrs_added", "cidrs_removed"))
        self.recent.append({"at": time.time(), "seconds": dt, "what": what, "endpoints": ups, "deleted": dels,
                            "full": full, "written": written})
        self.last_apply = {**res, "what": what, "seconds": round(dt, 6)}
        log.debug("policy: %s programmed in %.2f ms: %s", what, dt * 1000, res)

    # ------------------------------------------------------------------ queries (agent API)
    def list_rules(self) -> dict[str, Any]:
        """Compiled rules as identity pairs (with the labels they stand for), for ``novanetctl policy``."""
        with self._lock:
            labels = {i: {"namespace": ns, "labels": lab} for i, ns, lab, _ in self.identities.items()}
            rows: list[dict[str, Any]] = []
            for key in sorted(self.engine.endpoints):
                ep = self.engine.endpoints[key]
                local = {"endpoint": key, "ips": sorted(self.programmed.get(key, ())), "identity": ep.identity,
                         "namespace": key.partition("/")[0], "labels": labels.get(ep.identity, {}).get("labels", {})}
                for dname in ("ingress", "egress"):
                    d = ep.direction(dname)
                    if not d.isolated:
                        continue
                    for r in d.rules:
                        for peer in _peers(r, labels):
                            rows.append({**local, "direction": dname, "peer": peer, **_ports(r), "action": "ALLOW",
                                         "policy": r.policy, "origin": r.origin})
                    rows.append({**local, "direction": dname, "peer": {"kind": "any"}, "protocol": "*",
                                 "ports": "*", "action": "DENY",
                                 "policy": ", ".join(d.selected_by) or "defaultDeny",
                                 "origin": "isolated: anything no rule above allows"})
            return {"defaultDeny": self.engine.default_deny, "rules": rows,
                    "rejected": {k: v for k, v in sorted(self.engine.rejected.items())},
                    "warnings": self.engine.warnings(), "policies": sorted(self.engine.policies)}

    def status(self) -> dict[str, Any]:
        with self._lock:
            lat = sorted(r["seconds"] for r in self.recent if not r["full"])
            return {"supported": self.supported, "unsupportedReason": self.unsupported_reason, "dirty": self.dirty, "defaultDeny": self.engine.default_deny,
                    "policies": len(self.engine.policies), "rejected": len(self.engine.rejected),
                    "endpoints": len(self.engine.endpoints), "programmedEndpoints": sum(
                        len(v) for v in self.programmed.values()),
                    "compileSeconds": round(self.compile_seconds, 6), "lastApply": self.last_apply,
                    "programming": {"count": len(lat), "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
                                    "max": lat[-1] if lat else None},
                    "recent": list(self.recent)[-200:]}


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _peers(r: Rule, labels: dict[int, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if isinstance(r.peer, AnyPeer):
        yield {"kind": "any"}
    elif isinstance(r.peer, IdentityPeer):
        for i in sorted(r.peer.identities):
            yield {"kind": "identity", "identity": i, **labels.get(i, {"namespace": "", "labels": {}})}
    else:
        assert isinstance(r.peer, CidrPeer)
        yield {"kind": "cidr", "cidr": r.peer.cidr, "except": list(r.peer.excepts)}


def _ports(r: Rule) -> dict[str, str]:
    if r.ports is None:
        return {"protocol": "*", "ports": "*"}
    protos = sorted({p.protocol for p in r.ports})
    parts = []
    for p in r.ports:
        if p.first == 0 and p.last == 65535:
            parts.append(f"{p.protocol}/*")
        elif p.first == p.last:
            parts.append(f"{p.protocol}/{p.first}")
        else:
            parts.append(f"{p.protocol}/{p.first}-{p.last}")
    if len(protos) == 1:
        return {"protocol": protos[0], "ports": ",".join(x.split("/", 1)[1] for x in parts)}
    return {"protocol": ",".join(protos), "ports": ",".join(parts)}


# ---------------------------------------------------------------------- API and metrics


def register_api(router: Any, agent: Agent) -> None:
    def sync() -> PolicySync:
        s = getattr(agent, "policy", None)
        if s is None:
            raise ApiError("unavailable", "NetworkPolicy is not running in this agent")
        return s

    def drops(p: dict[str, Any]) -> Any:
        """Recent POLICY_DENIED/POLICY_DENY_RULE drops from the datapath, each with the policy behind it."""
        limit = p.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ApiError("invalid_params", f"limit: {limit!r} is not a non-negative integer")
        try:
            with ApiClient(agent.config.sockets.dataplane, timeout=10) as c:  # a stream: own connection
                evs = list(c.stream("dp.flows", {"drops_only": True, "limit": 100000}))
        except Unreachable as e:
            raise ApiError("unavailable", str(e)) from None
        pods = {pod.ip: pod.key for pod in agent.state.pods.values() if pod.ip}
        out = []
        for e in evs:
            if "policy_reason" not in e:
                continue
            out.append({**e, "src_pod": pods.get(e["src_ip"], ""), "dst_pod": pods.get(e["dst_ip"], "")})
        return out[-limit:] if limit else []

    router.add("policy.list", lambda p: sync().list_rules(),
               doc="compiled NetworkPolicy rules as identity pairs; rejected policies; warnings")
    router.add("policy.status", lambda p: sync().status(),
               doc="NetworkPolicy sync: counts, programming latency (p50/p99), last apply")
    router.add("policy.drops", drops, doc="recent policy drops, each naming its policy")

    def explain_(p: dict[str, Any]) -> Any:
        """Why from -> to:port/protocol is allowed or denied: the policies per side and the rule that decides."""
        from novanet_core.policy.explain import ExplainError, explain

        for k in ("from", "to"):
            if not isinstance(p.get(k), str) or not p[k]:
                raise ApiError("invalid_params", f"{k}: required, NAMESPACE/POD or an IP address")
        nodes = {n.name: n.internal_ip or "" for n in agent.state.nodes.values()}
        try:
            with agent.lock:  # a consistent snapshot of the state
                return explain(agent.state, agent.config.policy.defaultDeny, p["from"], p["to"], p.get("port", 0),
                               str(p.get("protocol", "TCP")), nodes, p.get("family"))
        except ExplainError as e:
            raise ApiError("invalid_params", str(e)) from None

    router.add("policy.explain", explain_, doc="policies and rules that decide one connection (policy explain)")

