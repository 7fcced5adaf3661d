"""Prometheus metrics endpoint shared by the agent and the dataplane.

Each process serves its own registry on its own address (``metrics.address``; empty disables).
Plugins add collectors through ``novanet_register_metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
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
        h, _, port = address.rpartition(":")
        try:
            start_http_server(int(port), addr=h or "0.0.0.0", registry=registry)
            log.info("metrics on http://%s/metrics", address)
        except OSError as e:
            log.error("metrics endpoint %s not started: %s", address, e)
    return registry


class _OwnedHistogram(Collector):
    """A histogram the agent's parts own (made with registry=None), served from this registry."""

    def __init__(self, get: Callable[[], Histogram]):
        self.get = get

    def collect(self) -> Iterator[Any]:
        yield from self.get().collect()
