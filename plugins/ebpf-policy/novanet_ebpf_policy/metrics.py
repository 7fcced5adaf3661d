"""Prometheus collectors for the dataplane process (read from the maps at scrape time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from novanet_ebpf_policy.backend import EbpfDatapath

# Maps whose fill level means something (arrays are always "full", a ring buffer is not counted).
FILL_TYPES = ("hash", "lru_hash", "lpm_trie", "percpu_hash", "lru_percpu_hash")


class DatapathCollector(Collector):
    def __init__(self, get_backend: Callable[[], EbpfDatapath | None]):
        self._get = get_backend

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        b = self._get()
        if b is None or b.maps is None:
            return
        drops = CounterMetricFamily("novanet_dataplane_drops", "Packets dropped by the eBPF datapath",
                                    labels=["reason"])
        for reason, n in b.drop_counters().items():
            drops.add_metric([reason], n)
        yield drops
        fc = b.flow_counters()
        yield CounterMetricFamily("novanet_dataplane_flow_events_consumed",
                                  "Flow events read from the ring buffer", value=fc["consumed"])
        yield CounterMetricFamily("novanet_dataplane_flow_events_lost",
                                  "Flow events the programs could not reserve (consumer behind)",
                                  value=fc["lost"])
        yield CounterMetricFamily("novanet_dataplane_flow_events_submitted",
                                  "Flow events submitted by the programs", value=fc["submitted"])
        yield CounterMetricFamily("novanet_dataplane_flow_events_follower_dropped",
                                  "Flow events a slow follower (flows -f, export) could not take",
                                  value=fc["follower_dropped"])
        yield CounterMetricFamily("novanet_dataplane_flow_events_skipped",
                                  "Ring records of an unexpected size the consumer skipped (none expected)",
                                  value=fc["skipped"])
        yield CounterMetricFamily("novanet_dataplane_new_flows", "Connections the datapath admitted",
                                  value=fc["new_flows"])
        yield GaugeMetricFamily("novanet_dataplane_endpoints", "Entries in the endpoints map",
                                value=b.maps.count("endpoints"))
        yield GaugeMetricFamily("novanet_dataplane_policies", "Entries in the policies map",
                                value=b.maps.count("policies"))
        ft = b.flow_table()
        yield GaugeMetricFamily("novanet_dataplane_flow_table_entries", "Entries in the flow table (ct map) at the "
                                "last sweep, two per flow", value=ft.get("entries", 0))
        yield GaugeMetricFamily("novanet_dataplane_flow_table_capacity", "Size of the flow table (bpf.flowTableSize)",
                                value=ft["capacity"])
        yield CounterMetricFamily("novanet_dataplane_flow_table_swept", "Flow table entries removed as idle",
                                  value=ft.get("deleted", 0))
        pm = b.policy_maps()
        if pm:
            yield GaugeMetricFamily("novanet_dataplane_policy_failed_closed_endpoints",
                                    "Endpoints whose NetworkPolicy did not fit the policy maps: all their traffic "
                                    "dropped (POLICY_MAP_FULL) until it does", value=len(pm["failedClosed"]))
            yield CounterMetricFamily("novanet_dataplane_policy_map_full_events",
                                      "Policy applies refused for want of room in the policy maps",
                                      value=pm["fullEvents"])
        yield GaugeMetricFamily("novanet_dataplane_tunnels", "Entries in the tunnels map",
                                value=b.maps.count("tunnels"))
        yield from self._traffic(b)
        yield from self._egress(b)
        yield from self._services(b)
        yield from self._maps(b)

    @staticmethod
    def _traffic(b: EbpfDatapath) -> Iterator[CounterMetricFamily]:
        fwd_p = CounterMetricFamily("novanet_dataplane_forwarded_packets", "Packets the datapath passed on, by "
                                    "direction (egress = leaving a pod, ingress = entering one)", labels=["direction"])
        fwd_b = CounterMetricFamily("novanet_dataplane_forwarded_bytes", "IP bytes the datapath passed on",
                                    labels=["direction"])
        drop_p = CounterMetricFamily("novanet_dataplane_dropped_packets", "Packets dropped, by reason and direction",
                                     labels=["direction", "reason"])
        drop_b = CounterMetricFamily("novanet_dataplane_dropped_bytes", "IP bytes dropped, by reason and direction",
                                     labels=["direction", "reason"])
        verdicts = CounterMetricFamily("novanet_policy_verdicts", "NetworkPolicy verdicts: connections allowed, "
                                       "packets denied", labels=["direction", "verdict"])
        for direction, codes in b.traffic().items():
            denied = 0
            for code, c in codes.items():
                if code == "FORWARDED":
                    fwd_p.add_metric([direction], c["packets"])
                    fwd_b.add_metric([direction], c["bytes"])
                elif code == "NEW_FLOW":
                    verdicts.add_metric([direction, "allowed"], c["packets"])
                else:
                    drop_p.add_metric([direction, code], c["packets"])
                    drop_b.add_metric([direction, code], c["bytes"])
                    if code in ("POLICY_DENIED", "POLICY_DENY_RULE"):
                        denied += c["packets"]
            verdicts.add_metric([direction, "denied"], denied)
        yield from (fwd_p, fwd_b, drop_p, drop_b, verdicts)

    @staticmethod
    def _egress(b: EbpfDatapath) -> Iterator[CounterMetricFamily]:
        if b.egress is None:
            return
        labels = ["src_identity", "dst_cidr", "action", "policy"]
        pk = CounterMetricFamily("novanet_egress_rule_packets", "Packets that matched an egress map rule (traffic "
                                 "leaving the cluster)", labels=labels)
        by = CounterMetricFamily("novanet_egress_rule_bytes", "IP bytes that matched an egress map rule",
                                 labels=labels)
        for r in b.egress_rules()["rules"]:
            lv = [str(r["src_identity"]), r["dst_cidr"], r["action"], ",".join(r["policies"]) or r["origin"]]
            pk.add_metric(lv, r["packets"])
            by.add_metric(lv, r["bytes"])
        yield pk
        yield by

    @staticmethod
    def _maps(b: EbpfDatapath) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily("novanet_bpf_map_entries", "Entries in a pinned BPF map", labels=["map"])
        cap = GaugeMetricFamily("novanet_bpf_map_max_entries", "Capacity of a pinned BPF map", labels=["map"])
        fill = GaugeMetricFamily("novanet_bpf_map_fill_ratio", "Entries / capacity of a pinned BPF map (1 = full)",
                                 labels=["map"])
        for m in b.map_info():
            if m["type"] not in FILL_TYPES or m["entries"] is None:
                continue
            entries.add_metric([m["name"]], m["entries"])
            cap.add_metric([m["name"]], m["max_entries"])
            fill.add_metric([m["name"]], m["entries"] / m["max_entries"] if m["max_entries"] else 0)
        yield entries
        yield cap
        yield fill

    @staticmethod
    def _services(b: EbpfDatapath) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        if b.services is None:
            return
        tr = CounterMetricFamily("novanet_dataplane_service_translations",
                                 "Service translations by the datapath, by where they happened: socket "
                                 "(connect/sendmsg), packet (a pod's new flow), nodeport (from outside "
                                 "the node), reverse_socket (recvmsg/getpeername restored the frontend); "
                                 "family: of the frontend (ipv4, ipv6)",
                                 labels=["path", "family"])
        for name, n in b.services.stats().items():
            v6 = name.endswith("6")
            tr.add_metric([name.removesuffix("6"), "ipv6" if v6 else "ipv4"], n)
        yield tr
        # connections refused for want of a ready backend: drops_total{reason="NO_SERVICE_BACKEND"}
        yield GaugeMetricFamily("novanet_dataplane_service_frontends", "Entries in the services map",
                                value=b.maps.count("services"))
