"""Prometheus collector for the agent: BGP session state, read from FRR at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The RFC 4271 finite-state-machine states FRR reports, always exported (a 0 says "none").
STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")


class BgpCollector(Collector):
    def __init__(self, get_backend: Callable[[], Any]):
        self._get = get_backend

    def collect(self) -> Iterator[GaugeMetricFamily]:
        b = self._get()
        if b is None or b.local is None:
            return
        up = GaugeMetricFamily("novanet_bgp_frr_connected", "1 when the agent reaches FRR (vtysh)",
                               value=1 if b.connected else 0)
        yield up
        try:
            peers = b.peers()
        except Exception:  # FRR down: the connected gauge says so; no session figures this scrape
            return
        sessions = GaugeMetricFamily("novanet_bgp_sessions", "BGP neighbors by session state", labels=["state"])
        est = GaugeMetricFamily("novanet_bgp_session_established", "1 when the BGP session is Established",
                                labels=["neighbor"])
        rcvd = GaugeMetricFamily("novanet_bgp_prefixes_received", "Prefixes received from the neighbor",
                                 labels=["neighbor"])
        counts = dict.fromkeys(STATES, 0)
        for p in peers:
            counts[p["state"]] = counts.get(p["state"], 0) + 1
            est.add_metric([p["neighbor"]], 1 if p["state"] == "Established" else 0)
            rcvd.add_metric([p["neighbor"]], p.get("pfxRcvd") or 0)
        for state, n in counts.items():
            sessions.add_metric([state], n)
        yield sessions
        yield est
        yield rcvd
