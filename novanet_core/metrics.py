"""Prometheus metrics endpoint shared by the agent and the dataplane.

Each process serves its own registry on its own address (the agent: ``metrics.address``; the
dataplane: ``--metrics-address``; empty disables). Plugins add collectors through
``novanet_register_metrics``. The same HTTP server answers the kubelet's probes: ``/healthz``
(200 while the process serves) and ``/readyz`` (200 only when the agent's ``status`` says
``ready``, 503 with the reason otherwise; the dataplane is ready once it serves).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Gauge, Histogram, make_wsgi_app
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def start_metrics(address: str, host: Any, component: str, owner: Any = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    if component == "agent" and owner is not None:
        g = Gauge("novanet_agent_endpoints_total", "Local pod endpoints", registry=registry)
        g.set_function(lambda: len(owner.store.all()))
        g2 = Gauge("novanet_agent_identities_total", "Security identities in use", registry=registry)
        g2.set_function(lambda: len(owner.identities.items()))
        g3 = Gauge("novanet_agent_dataplane_connected", "1 when the dataplane answers", registry=registry)
        g3.set_function(lambda: 1 if owner.dataplane.connected else 0)
        registry.register(_OwnedHistogram(lambda: owner.services.histogram))  # Service programming latency
        owner.cni_histogram = Histogram(
            "novanet_cni_operation_duration_seconds", "Agent-side duration of CNI operations", ["operation"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=registry)
    host.pm.hook.novanet_register_metrics.call_historic(kwargs={"registry": registry, "component": component})
    if address:
        ready = _agent_ready(owner) if component == "agent" and owner is not None else None
        h, _, port = address.rpartition(":")
        try:
            srv = make_server(h or "0.0.0.0", int(port), _app(registry, ready), _Server, handler_class=_QuietHandler)
            threading.Thread(target=srv.serve_forever, name="metrics", daemon=True).start()
            log.info("metrics on http://%s/metrics (probes: /healthz, /readyz)", address)
        except OSError as e:
            log.error("metrics endpoint %s not started: %s", address, e)
    return registry


Ready = Callable[[], tuple[bool, str]]


def _agent_ready(agent: Any) -> Ready:
    def ready() -> tuple[bool, str]:
        st = agent.status()
        if st.get("ready") is True:
            return True, "ready"
        why = {k: st.get(k) for k in ("ready", "reason") if k in st}
        why["dataplaneConnected"] = (st.get("dataplane") or {}).get("connected")
        return False, "not ready: " + json.dumps(why)

    return ready


def _app(registry: CollectorRegistry, ready: Ready | None) -> Callable[..., Any]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)
        ok, why = True, "ok"
        if path == "/readyz" and ready is not None:
            try:
                ok, why = ready()
            except Exception as e:  # a probe must get an answer, not a dropped connection
                ok, why = False, f"status failed: {type(e).__name__}: {e}"
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
        return [why.encode() + b"\n"]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: keep logs clean
        pass


class _OwnedHistogram(Collector):
    """A histogram the agent's parts own (made with registry=None), served from this registry."""

    def __init__(self, get: Callable[[], Histogram]):
        self.get = get

    def collect(self) -> Iterator[Any]:
        yield from self.get().collect()
