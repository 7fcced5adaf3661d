"""Restarts in every 3-node cell of {dual-stack, IPv6-only} x {vxlan, geneve, native} under traffic
in each family of the cell (long form): pings every 10 ms per family, across nodes and on one node,
and an established TCP stream per family, while every node's agent and then every node's dataplane
is SIGKILLed and restarted, three times each. Every ping is answered, every TCP stream moves data
in every second, and every pod keeps its addresses: in the lab's status, on its eth0, in each
node's endpoints and in each node's IPAM files.

A dual-stack cell has IPv4 and IPv6 pods on the dual underlay (its tunnel over IPv4), an IPv6-only
cell IPv6 pods on an IPv6-only underlay (its tunnel over IPv6); a native cell's nodes run FRR, whose
routes must outlive the agent (its reconcile after a SIGKILL finds nothing to change) and the
dataplane. The short form is in tests/lab/test_lab_dual_stack.py (one node, on the lab its
dual-stack test brings up)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.family_traffic import FamilyTraffic, addresses, kill_and_restart_under_traffic
from tests.support.lab import LabUnderTest

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.lab,
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.long,
]

PORTS = [{"name": "serve-80-tcp", "port": 80, "protocol": "TCP"}]
KILLS = 3
# x/a and x/d on node-1, x/b on node-2, x/c on node-3
PLACEMENT = {"a": "node-1", "b": "node-2", "c": "node-3", "d": "node-1"}
PAIRS = [("x/a", "x/b"), ("x/c", "x/a"), ("x/a", "x/d")]
DUAL_CIDR = "10.42.0.0/16,fd00:42::/48"
V6_CIDR = "fd00:42::/48"
NATIVE = {"routingMode": "native", "routing": {"type": "frr-bgp"}}
# cell -> (cluster settings, underlay family, families the pods have)
CELLS: dict[str, tuple[dict[str, Any], str, tuple[int, ...]]] = {
    "dual-stack-vxlan": ({"clusterCIDR": DUAL_CIDR, "tunnelProtocol": "vxlan"}, "dual", (4, 6)),
    "dual-stack-geneve": ({"clusterCIDR": DUAL_CIDR, "tunnelProtocol": "geneve"}, "dual", (4, 6)),
    "dual-stack-native": ({"clusterCIDR": DUAL_CIDR, **NATIVE}, "dual", (4, 6)),
    "ipv6-only-vxlan": ({"clusterCIDR": V6_CIDR, "tunnelProtocol": "vxlan"}, "IPv6", (6,)),
    "ipv6-only-geneve": ({"clusterCIDR": V6_CIDR, "tunnelProtocol": "geneve"}, "IPv6", (6,)),
    "ipv6-only-native": ({"clusterCIDR": V6_CIDR, **NATIVE}, "IPv6", (6,)),
}


def spec(cell: str) -> dict[str, Any]:
    cluster, underlay, _ = CELLS[cell]
    return {
        "cluster": {"datapath": "ebpf", **cluster},
        "underlay": {"family": underlay},
        "nodes": [{"name": n} for n in ("node-1", "node-2", "node-3")],
        "namespaces": [{"name": "x"}],
        "pods": [
            {"name": p, "namespace": "x", "node": n, "labels": {"pod": p}, "ports": PORTS}
            for p, n in PLACEMENT.items()
        ],
    }


@pytest.fixture(params=sorted(CELLS))
def cell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def lab(cell: str, tmp_path: Path) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(spec(cell), tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def bgp_routes(lab: LabUnderTest) -> dict[str, list[str]]:
    """Each node's routes FRR installed (``proto bgp``, both families): a restarted agent finds
    FRR already right, so none of them is replaced."""
    out = {}
    for node in [n["name"] for n in lab.status()["nodes"]]:
        out[node] = sorted(
            json.dumps(r, sort_keys=True)
            for fam in ("-4", "-6")
            for r in json.loads(
                lab.run_in(
                    lab.node_netns(node), "ip", "-j", fam, "route", "show", "proto", "bgp", check=True
                ).stdout
            )
        )
    return out


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def test_every_family_loses_nothing_across_agent_and_dataplane_kills_on_every_node(
    cell: str, lab: LabUnderTest
) -> None:
    families = CELLS[cell][2]
    native = CELLS[cell][0].get("routingMode") == "native"
    before = addresses(lab)
    routes = bgp_routes(lab) if native else {}
    assert all(len(r) == 2 * len(families) for r in routes.values()), routes  # a route per family per remote
    assert all(len(ips) == len(families) for ips in before["status"].values()), before["status"]
    assert len(before["endpoints"]) == 3
    traffic = FamilyTraffic(lab, pairs=PAIRS, stream_pair=("x/a", "x/b"), families=families)
    load0, t0 = _load(), time.monotonic()
    report = kill_and_restart_under_traffic(lab, traffic, KILLS)
    seconds, load1 = time.monotonic() - t0, _load()
    lost = traffic.lost(report["last"])
    during = {k: report["last"][k] - report["first"][k] for k in report["last"]}
    print(
        f"\n{cell}: {report['restarts']} daemon SIGKILLs in {seconds:.0f} s (load {load0} -> {load1}, "
        f"{os.cpu_count()} cores); pings every 10 ms, requests during the disruption: "
        + ", ".join(f"{s} -> {d} IPv{f}: {n}" for (s, d, f), n in during.items())
        + "; lost: "
        + ", ".join(f"{k}: {len(v)}" for k, v in lost.items())
    )
    assert report["restarts"] == 2 * KILLS * 3
    assert set(during) == {(s, d, f) for s, d in PAIRS for f in families}
    assert all(n > 100 for n in during.values()), during
    assert {k: v for k, v in lost.items() if v} == {}
    assert [st.family for st in traffic.streams] == list(families)
    for st in traffic.streams:
        rates = st.rates()
        assert st.ran_to_the_end and len(rates) >= 5 and min(rates) > 0, f"IPv{st.family}: {st.out}{st.err}"
    assert addresses(lab) == before
    if native:
        assert bgp_routes(lab) == routes
        for node in before["endpoints"]:
            st = lab.ctl("routing", "status", node=node)
            assert st["connected"] and st["applies"] == 0 and st["failures"] == 0, st  # FRR was never touched
