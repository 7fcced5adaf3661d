"""Prometheus collector for the agent: the Geneve programs' counters, read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from novanet_geneve.backend import GeneveTunnel


class GeneveCollector(Collector):
    def __init__(self, get_backend: Callable[[], GeneveTunnel | None]):
        self._get = get_backend

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        b = self._get()
        if b is None:
            return
        c = CounterMetricFamily("novanet_geneve_packets", "Packets seen by the Geneve programs, by event",
                                labels=["event"])
        for event, n in b.programs.counters(b.root).items():
            c.add_metric([event], n)
        yield c
        yield GaugeMetricFamily("novanet_geneve_tunnels", "Remote nodes with a Geneve tunnel entry",
                                value=len(b.remotes))
