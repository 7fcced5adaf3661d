"""Services in the agent: resolve this node's frontends and keep the datapath in step.

On a state event only the Services it can touch are re-resolved (the Service itself; the Service
an EndpointSlice names, before and after the change; the Services whose slices point at a Pod),
and only frontends that differ from what was sent go to the dataplane (``dp.service.upsert`` /
``dp.service.delete``). When the dataplane (re)connects, its live list (``dp.service.list``) is
compared with the desired set and the differences are fixed: a fresh dataplane gets everything,
one that kept its maps gets nothing.

``kubeProxyReplacement: false``: kube-proxy translates; no frontend is sent, and the datapath
gets the set of every Service backend instead (``dp.service.backends``), which it needs so that
replies from those backends pass the kernel's conntrack, where kube-proxy's DNAT is reversed.

Programming latency = from the moment the agent takes a state event in to the moment the
dataplane acknowledges the last frontend of that change; exported as
``novanet_agent_service_programming_seconds`` and summarised in ``services.status``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.api.protocol import ApiError
from novanet_core.services.resolve import compat_backends, frontends_for
from novanet_core.state.model import ClusterState, StateEvent
from novanet_core.state.services import EndpointSlice
from novanet_core.types import NodeInfo, ServiceFrontend

if TYPE_CHECKING:
    from novanet_core.agent.service import Agent

log = logging.getLogger("novanet.services")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


class ServiceSync:
    """Reads the agent's ``state``; writes only to the dataplane. ``replace_kube_proxy`` is the
    node's ``kubeProxyReplacement``."""

    def __init__(self, state: ClusterState, dataplane: DataplaneClient, node: NodeInfo, replace_kube_proxy: bool):
        self.state, self.dataplane, self.node = state, dataplane, node
        self.replace_kube_proxy = replace_kube_proxy
        self.desired: dict[str, ServiceFrontend] = {}
        self.wire: dict[str, dict[str, Any]] = {}  # frontend key -> desired[key] in wire form, encoded once
        # Keys whose acknowledged form is the desired one, kept per key as either side changes:
        # status() is polled while changes are programmed, and counting it over every frontend
        # held the lock for ~50 ms at 10,000 Services, which each change then waited for.
        self.programmed: set[str] = set()
        # Indexes, so that an event costs its Services, not the whole state: Service key -> its
        # slices, and pod key -> how many slices of each Service point at it.
        self.slices: dict[str, dict[str, EndpointSlice]] = {}
        self.pod_refs: dict[str, collections.Counter[str]] = {}
        self.by_service: dict[str, set[str]] = {}  # Service key -> its frontend keys
        self.sent: dict[str, dict[str, Any]] = {}  # frontend key -> what the dataplane acknowledged
        self.sent_by_service: dict[str, set[str]] = {}
        self.compat_sent: list[dict[str, Any]] | None = None
        self.unsupported = ""  # the datapath's answer when it has no load-balancer
        self.dirty = False  # a send failed: the next resync repairs
        self.histogram = Histogram("novanet_agent_service_programming_seconds",
                                   "Service or EndpointSlice change taken in by the agent -> frontends written and "
                                   "acknowledged by the dataplane", buckets=LATENCY_BUCKETS, registry=None)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=2048)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ entry points (agent)
    def start(self) -> None:
        with self._lock:
            self.slices, self.pod_refs = {}, {}
            for sl in self.state.endpointslices.values():
                self._index(sl, +1)
            for key in list(self.state.services):
                self._resolve(key)
            self.resync()

    def apply_event(self, ev: StateEvent, old: Any, received: float | None = None) -> None:
        """Feed one state event, after the agent applied it to its state; ``old`` is the object it replaced."""
        t0 = received if received is not None else time.perf_counter()
        if ev.type == "SYNCED" or ev.kind not in ("Service", "EndpointSlice", "Pod", "Node"):
            return
        with self._lock:
            if ev.kind == "EndpointSlice":
                if old is not None:
                    self._index(old, -1)
                if ev.type != "DELETED":
                    self._index(ev.obj, +1)
            touched = self._touched(ev, old)
            if not touched:
                return
            for key in touched:
                self._resolve(key)
            self._send(t0, f"{ev.type} {ev.kind} {getattr(ev.obj, 'key', '')}", touched)

    def resync(self) -> None:
        """Compare the dataplane's live frontends with the desired ones and fix the differences."""
        with self._lock:
            self.unsupported = ""
            self.compat_sent = None
            try:
                live = {d["key"]: d for d in self.dataplane.call("dp.service.list") if "key" in d}
            except DataplaneUnavailable:
                self.dirty = True
                return
            except ApiError as e:
                self._refused(e, "dp.service.list")
                live = {}
            self.sent, self.sent_by_service = {}, {}
            self.programmed.clear()
            for k, d in live.items():
                self._sent_put(k, d)
            self._send(time.perf_counter(), "resync", None)

    # ------------------------------------------------------------------ resolution
    def _touched(self, ev: StateEvent, old: Any) -> set[str]:
        state = self.state
        if ev.kind == "Service":
            return {ev.obj.key}
        if ev.kind == "EndpointSlice":
            keys = set()
            for s in (old, ev.obj if ev.type != "DELETED" else None):
                if s is not None and s.service_name:
                    keys.add(f"{s.namespace}/{s.service_name}")
            return keys
        if ev.kind == "Node":
            # Only this node's own address matters (its NodePort frontends).
            return set(state.services) if ev.obj.name == self.node.name else set()
        # A Pod: the Services whose slices point at it (named target ports, endpoints without nodeName).
        return set(self.pod_refs.get(ev.obj.key, ()))

    def _index(self, sl: EndpointSlice, delta: int) -> None:
        if not sl.service_name:
            return  # kube-proxy ignores a slice without the label; so do we
        svc_key = f"{sl.namespace}/{sl.service_name}"
        if delta > 0:
            self.slices.setdefault(svc_key, {})[sl.key] = sl
        else:
            self.slices.get(svc_key, {}).pop(sl.key, None)
        for e in sl.endpoints:
            if e.target_ref is None:
                continue
            pod = f"{e.target_ref.namespace or sl.namespace}/{e.target_ref.name}"
            refs = self.pod_refs.setdefault(pod, collections.Counter())
            refs[svc_key] += delta
            if refs[svc_key] <= 0:
                del refs[svc_key]
                if not refs:
                    del self.pod_refs[pod]

    def _resolve(self, svc_key: str) -> None:
        svc = self.state.services.get(svc_key)
        fes = frontends_for(self.state, svc, self.node.name, self.node.ips,
                            self.slices.get(svc_key, {}).values()) if svc else []
        old = self.by_service.pop(svc_key, set())
        for k in old:
            self.desired.pop(k, None)
            self.wire.pop(k, None)
        if fes:
            self.by_service[svc_key] = {fe.key for fe in fes}
            for fe in fes:
                self.desired[fe.key] = fe
                self.wire[fe.key] = fe.to_dict()
        for k in old | self.by_service.get(svc_key, set()):
            self._mark(k)

    def _mark(self, key: str) -> None:
        if key in self.wire and self.sent.get(key) == self.wire[key]:
            self.programmed.add(key)
        else:
            self.programmed.discard(key)

    # ------------------------------------------------------------------ sending
    def _send(self, t0: float, what: str, touched: set[str] | None) -> None:
        if self.dirty and touched is not None:
            return self.resync()
        try:
            n = self._send_compat() if not self.replace_kube_proxy else self._send_frontends(touched)
        except DataplaneUnavailable as e:
            self.dirty = True
            log.warning("services: %s not programmed (%s); repairing when the dataplane is back", what, e)
            return
        self.dirty = False
        if n:
            dt = time.perf_counter() - t0
            self.histogram.observe(dt)
            self.recent.append({"at": time.time(), "seconds": dt, "what": what, "written": n,
                                "full": touched is None})

    def _sent_put(self, key: str, d: dict[str, Any]) -> None:
        self.sent[key] = d
        self.sent_by_service.setdefault(service_of(key), set()).add(key)
        self._mark(key)

    def _sent_pop(self, key: str) -> None:
        self.sent.pop(key, None)
        keys = self.sent_by_service.get(service_of(key))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.sent_by_service[service_of(key)]
        self._mark(key)

    def _send_frontends(self, touched: set[str] | None) -> int:
        dp = self.dataplane
        if touched is None:
            keys = set(self.desired) | set(self.sent)
        else:
            keys = {k for svc in touched for k in (*self.by_service.get(svc, ()), *self.sent_by_service.get(svc, ()))}
        want = {k: self.wire[k] for k in keys if k in self.wire}
        n = 0
        # Deletes first: a changed Service may move a key's address, and a datapath may key by address.
        for k in sorted(k for k in keys if k not in want and k in self.sent):
            self._call("dp.service.delete", {"key": k})
            self._sent_pop(k)
            n += 1
        if self.unsupported:
            return n
        for k in sorted(k for k in keys if k in want and self.sent.get(k) != want[k]):
            try:
                dp.call("dp.service.upsert", {"frontend": want[k]})
            except ApiError as e:
                if self._refused(e, f"frontend {k}"):
                    return n
                continue
            self._sent_put(k, want[k])
            n += 1
        return n

    def _send_compat(self) -> int:
        backends = [b.to_dict() for b in compat_backends(self.state, self.node.name,
                                                         {k: v.values() for k, v in self.slices.items()})]
        n = 0
        for k in sorted(self.sent):  # frontends left from kubeProxyReplacement: true
            self._call("dp.service.delete", {"key": k})
            n += 1
        self.sent, self.sent_by_service = {}, {}
        self.programmed.clear()
        if backends == self.compat_sent:
            return n
        try:
            self.dataplane.call("dp.service.backends", {"backends": backends})
        except ApiError as e:
            self._refused(e, "the backend set")
            return n
        self.compat_sent = backends
        return n + 1

    def _call(self, method: str, params: dict[str, Any]) -> None:
        try:
            self.dataplane.call(method, params)
        except ApiError as e:
            self._refused(e, method)

    def _refused(self, e: ApiError, what: str) -> bool:
        """Log a refusal; True when the datapath has no load-balancer at all (stop sending)."""
        if e.code in ("unsupported", "unknown_method"):
            if not self.unsupported:
                log.error("services: %s (%s)", e.message,
                          "kubeProxyReplacement is true, but nothing will translate Services" if self.replace_kube_proxy
                          else "kube-proxy's translations may see their replies bypass conntrack")
            self.unsupported = e.message
            return True
        log.error("services: datapath refused %s: %s", what, e.message)
        return False

    # ------------------------------------------------------------------ queries (agent API)
    def list_frontends(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**self.wire[k], "programmed": k in self.programmed} for k in sorted(self.wire)]

    def status(self) -> dict[str, Any]:
        with self._lock:
            lat = sorted(r["seconds"] for r in self.recent if not r["full"])
            return {"kubeProxyReplacement": self.replace_kube_proxy, "unsupported": self.unsupported,
                    "dirty": self.dirty, "services": len(self.by_service), "frontends": len(self.desired),
                    "programmedFrontends": len(self.programmed),
                    "compatBackends": len(self.compat_sent or []),
                    "programming": {"count": len(lat), "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
                                    "max": lat[-1] if lat else None},
                    "recent": list(self.recent)[-200:]}


def service_of(frontend_key: str) -> str:
    """``ns/name:port/PROTO[/nodeport]`` -> ``ns/name`` (names never hold ':')."""
    return frontend_key.partition(":")[0]


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def register_api(router: Any, agent: Agent) -> None:
    def sync() -> ServiceSync:
        s = getattr(agent, "services", None)
        if s is None:
            raise ApiError("unavailable", "Services are not running in this agent")
        return s

    router.add("services.list", lambda p: sync().list_frontends(),
               doc="this node's resolved Service frontends and backends, and whether the datapath has each")
    router.add("services.status", lambda p: sync().status(),
               doc="Service sync: mode, counts, programming latency (p50/p99)")
