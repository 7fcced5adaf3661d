"""Prometheus metrics endpoint shared by the agent and the dataplane.

Each process serves its own registry on its own address (``metrics.address`` for the agent,
``metrics.dataplaneAddress`` for the dataplane; empty disables). Plugins add collectors through
``novanet_register_metrics``. Names follow the Prometheus conventions: ``_total`` only on
counters, base units in the name (``_seconds``, ``_bytes``, ``_ratio``), one ``novanet_build_info``
per process. The full list, and the names that changed, are in docs/metrics.md. The same HTTP
server answers the kubelet's probes: ``/healthz`` (200 while the process serves) and ``/readyz``
(200 only when the agent's ``status`` says ``ready``, 503 with the reason otherwise; the dataplane
is ready once it serves).
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from novanet_core import __version__

log = logging.getLogger(__name__)


class BuildInfo(Collector):
    def __init__(self, component: str):
        self.component = component

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("novanet_build_info", "Always 1; the labels say which NovaNet this process runs",
                              labels=["version", "component", "python_version"])
        g.add_metric([__version__, self.component, platform.python_version()], 1)
        yield g


class AgentCollector(Collector):
    """The agent's counts, read at scrape time (never stale, nothing to keep in step)."""

    def __init__(self, agent: Any):
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily]:
        a = self.agent

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("novanet_agent_endpoints", "Local pod endpoints", len(a.store.all()))
        yield gauge("novanet_agent_identities", "Security identities in use by local endpoints",
                    len(a.identities.items()))
        yield gauge("novanet_agent_remote_endpoints", "Pods on other nodes known to this agent", len(a.nodes.remotes))
        yield gauge("novanet_agent_nodes", "Nodes of the cluster (this one included)", 1 + len(a.nodes.remote_nodes or []))
        pol = a.policy.status()
        yield gauge("novanet_agent_network_policies", "NetworkPolicies the agent compiled", pol["policies"])
        yield gauge("novanet_agent_network_policies_rejected", "NetworkPolicies rejected as invalid",
                    pol["rejected"])
        yield gauge("novanet_agent_tunnels", "Tunnels to other nodes (overlay mode)",
                    len(a.tunnel.status()) if a.tunnel is not None else 0)
        yield gauge("novanet_agent_dataplane_connected", "1 when the dataplane answers",
                    1 if a.dataplane.connected else 0)
        yield gauge("novanet_agent_ready", "1 when the agent serves CNI requests", 1 if a.ready else 0)
        yield gauge("novanet_agent_start_time_seconds", "When the agent started (Unix time)", a.started_at)


def serve(address: str, registry: CollectorRegistry, component: str, owner: Any = None) -> bool:
    if not address:
        return False
    ready = _agent_ready(owner) if component == "agent" and owner is not None else None
    h, _, port = address.rpartition(":")
    h = h.removeprefix("[").removesuffix("]") or "0.0.0.0"  # an IPv6 host is written [addr]:port
    cls = _Server6 if ":" in h else _Server
    try:
        srv = make_server(h, int(port), _app(registry, ready), cls, handler_class=_QuietHandler)
    except (OSError, ValueError) as e:
        log.error("%s metrics endpoint %s not started: %s", component, address, e)
        return False
    threading.Thread(target=srv.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s/metrics (probes: /healthz, /readyz)", address)
    return True


def start_metrics(address: str, host: Any, component: str, owner: Any = None,
                  backends: Mapping[str, Any] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BuildInfo(component))
    if component == "agent" and owner is not None:
        registry.register(AgentCollector(owner))
        registry.register(owner.cni_stats)
        registry.register(_OwnedHistogram(lambda: owner.services.histogram))  # Service programming latency
        # The agent's own: state event taken in -> policy maps written and acknowledged.
        registry.register(_OwnedHistogram(lambda: owner.policy.histogram))
    host.pm.hook.novanet_register_metrics.call_historic(
        kwargs={"registry": registry, "component": component, "backends": dict(backends or {})})
    serve(address, registry, component, owner)
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


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks the resolver for the bind address's name (getfqdn), only to
        # fill SERVER_NAME: in a pod or node netns whose resolver is unreachable that held every
        # daemon's start for the resolver's timeout (10 s in the DaemonSet pod).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: keep logs clean
        pass


class _OwnedHistogram(Collector):
    """A histogram the agent's parts own (made with registry=None), served from this registry."""

    def __init__(self, get: Callable[[], Histogram]):
        self.get = get

    def collect(self) -> Iterator[Any]:
        yield from self.get().collect()

