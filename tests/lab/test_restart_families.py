"""Restarts in a dual-stack 3-node lab under traffic in both families (long form): pings every
10 ms over IPv4 and over IPv6, across nodes and on one node, and an established TCP stream per
family, while every node's agent and then every node's dataplane is SIGKILLed and restarted, three
times each. Every ping in both families is answered, both TCP streams move data in every second,
and every pod keeps both addresses: in the lab's status, on its eth0, in each node's endpoints
and in each node's IPAM files. The short form is in tests/lab/test_lab_dual_stack.py (one node,
on the lab its dual-stack test brings up)."""

from __future__ import annotations

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


def spec(tunnel: str) -> dict[str, Any]:
    return {
        "cluster": {"clusterCIDR": "10.42.0.0/16,fd00:42::/48", "datapath": "ebpf", "tunnelProtocol": tunnel},
        "underlay": {"family": "dual"},
        "nodes": [{"name": n} for n in ("node-1", "node-2", "node-3")],
        "namespaces": [{"name": "x"}],
        "pods": [
            {"name": p, "namespace": "x", "node": n, "labels": {"pod": p}, "ports": PORTS}
            for p, n in PLACEMENT.items()
        ],
    }


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(spec("vxlan"), tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_both_families_lose_nothing_across_agent_and_dataplane_kills_on_every_node(lab: LabUnderTest) -> None:
    before = addresses(lab)
    assert all(len(ips) == 2 for ips in before["status"].values())
    traffic = FamilyTraffic(
        lab, pairs=[("x/a", "x/b"), ("x/c", "x/a"), ("x/a", "x/d")], stream_pair=("x/a", "x/b")
    )
    report = kill_and_restart_under_traffic(lab, traffic, KILLS)
    lost = traffic.lost(report["last"])
    during = {k: report["last"][k] - report["first"][k] for k in report["last"]}
    print(
        f"\n{report['restarts']} daemon SIGKILLs; pings every 10 ms, requests during the disruption: "
        + ", ".join(f"{s} -> {d} IPv{f}: {n}" for (s, d, f), n in during.items())
        + "; lost: "
        + ", ".join(f"{k}: {len(v)}" for k, v in lost.items())
    )
    assert all(n > 100 for n in during.values()), during
    assert {k: v for k, v in lost.items() if v} == {}
    for st in traffic.streams:
        rates = st.rates()
        assert st.ran_to_the_end and len(rates) >= 5 and min(rates) > 0, f"IPv{st.family}: {st.out}{st.err}"
    assert addresses(lab) == before
