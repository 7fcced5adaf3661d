"""How NovaNet's cost grows, one dimension at a time (needs root; results in bench/results/scale_*.json,
plots in docs/img/scale_*.png).

    .venv/bin/python -m bench.scale pods [--steps 10,110,250]     # pods per node, one node
    .venv/bin/python -m bench.scale nodes [--steps 2,5,10,20]     # lab nodes (overlay, vxlan)
    .venv/bin/python -m bench.scale cluster [--nodes 1000 --pods 30000 --policies 2000] [--fractions 1.0] [--profile]
    .venv/bin/python -m bench.scale flows [--steps 1000,...]      # flow-table entries
    .venv/bin/python -m bench.scale DIMENSION [--tag T] --replot   # redraw the PNG from the saved results

Every run prints the machine's load average before and after: the machine is shared, and the
absolute figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench.common import RESULTS, save
from bench.scale import plot


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(","))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _pods(a: argparse.Namespace) -> dict[str, Any]:
    from bench.scale import pods

    return pods.run(a.steps or pods.STEPS)


def _plot_pods(res: dict[str, Any]) -> None:
    rows = res["rows"]
    x = [r["pods"] for r in rows]
    plot.curves("scale_pods", "pods on one node", "pods", x, [
        ("RSS (MiB)", {"agent": plot.series(rows, "agent", "rss_mib"),
                       "dataplane": plot.series(rows, "dataplane", "rss_mib")}),
        ("ADD latency p50 (ms)", {"NovaNet": plot.series(rows, "add_ms", "novanet_p50"),
                                  "bridge+host-local": plot.series(rows, "add_ms", "reference_p50")}),
        ("idle CPU (% of a core)", {"agent": plot.series(rows, "agent", "idle_cpu_pct"),
                                    "dataplane": plot.series(rows, "dataplane", "idle_cpu_pct")}),
    ])


def _nodes(a: argparse.Namespace) -> dict[str, Any]:
    from bench.scale import nodes

    return nodes.run(a.steps or nodes.STEPS)


def _plot_nodes(res: dict[str, Any]) -> None:
    rows = res["rows"]
    x = [r["nodes"] for r in rows]
    plot.curves("scale_nodes", "lab nodes (overlay, vxlan)", "nodes", x, [
        ("seconds", {"lab up": plot.series(rows, "up_s"), "join converged": plot.series(rows, "join_s")}),
        ("per-agent RSS (MiB)", {"agent": plot.series(rows, "agent_rss_mib"),
                                 "dataplane": plot.series(rows, "dataplane_rss_mib")}),
        ("idle CPU per node (%)", {"agent": plot.series(rows, "agent_idle_cpu_pct"),
                                   "dataplane": plot.series(rows, "dataplane_idle_cpu_pct")}),
    ])


def _cluster(a: argparse.Namespace) -> dict[str, Any]:
    from bench.scale import cluster

    fractions = tuple(float(x) for x in a.fractions.split(","))
    profile = RESULTS / f"scale_cluster{'_' + a.tag if a.tag else ''}" if a.profile else None
    return cluster.run(a.nodes, a.pods, a.policies, a.events, fractions, profile)


def _plot_cluster(res: dict[str, Any]) -> None:
    rows = res["rows"]
    x = [r["remote_pods"] for r in rows]
    plot.curves("scale_cluster", "one agent fed a cluster (nodes, pods, policies grow together)", "remote pods", x, [
        ("agent RSS (MiB)", {"agent": plot.series(rows, "agent_rss_mib")}),
        ("full sync (s)", {"start -> ready": plot.series(rows, "full_sync_s")}),
        ("one pod event (ms)", {"p50": plot.series(rows, "pod_event", "p50_ms")}),
    ], logx=True)


def _flows(a: argparse.Namespace) -> dict[str, Any]:
    from bench.scale import flows

    return flows.run(a.steps or flows.STEPS)


def _plot_flows(res: dict[str, Any]) -> None:
    rows = res["rows"]
    x = [r["entries"] for r in rows]
    plot.curves("scale_flows", "flow table (ct) entries", "entries", x, [
        ("map memory (MiB)", {"ct": plot.series(rows, "ct_mib")}),
        ("ns per packet", {"nv_from_pod, established": plot.series(rows, "from_pod_ns")}),
    ], logx=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("dimension", choices=["pods", "nodes", "cluster", "flows"])
    ap.add_argument("--steps", type=_ints, default=None, help="comma-separated sizes")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=30000)
    ap.add_argument("--policies", type=int, default=2000)
    ap.add_argument("--events", type=int, default=200, help="cluster: pod events timed after the full sync")
    ap.add_argument("--fractions", default="0.01,0.1,1.0", help="cluster: the sizes run, as fractions of the target")
    ap.add_argument("--profile", action="store_true",
                    help="cluster: run the agent under cProfile (bench/results/scale_cluster*.prof, top in the json)")
    ap.add_argument("--tag", default="", help="suffix of the result file (e.g. baseline)")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the saved result file")
    a = ap.parse_args()
    name = f"scale_{a.dimension}{'_' + a.tag if a.tag else ''}"
    plotter = {"pods": _plot_pods, "nodes": _plot_nodes, "cluster": _plot_cluster, "flows": _plot_flows}[a.dimension]
    if a.replot:
        plotter(json.loads((RESULTS / f"{name}.json").read_text()))
        return
    if os.geteuid() != 0:
        sys.exit("bench.scale needs root (netns, veths, BPF)")
    load0 = _load()
    print(f"load average before: {load0}", flush=True)
    res = {"pods": _pods, "nodes": _nodes, "cluster": _cluster, "flows": _flows}[a.dimension](a)
    res["load_before"], res["load_after"] = load0, _load()
    print(f"load average after: {res['load_after']}")
    path = save(name, res)
    plotter(res)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
