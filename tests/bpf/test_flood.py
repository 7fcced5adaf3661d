"""A flood into a deny rule: every drop is counted under its reason, and every event the ring
buffer could not take is counted as lost, so nothing goes unaccounted."""

from __future__ import annotations

import time

import pytest

from tests.bpf.topo import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


def test_flood_into_deny_rule_counts_drops_and_lost_events(topo: Topology, datapath) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    datapath.upsert_policy({"src_identity": a.identity, "dst_identity": b.identity, "protocol": "udp",
                            "action": "deny"})
    datapath.flows.stop()  # nobody consumes: the 8 MiB ring (~95 k events) fills, reservations fail
    d0, f0 = datapath.drop_counters(), datapath.flow_counters()
    a.run("python3", "-c", _BLAST.format(ip=b.ip), timeout=60)
    d1, f1 = _settled(datapath)
    denied = d1["POLICY_DENY_RULE"] - d0["POLICY_DENY_RULE"]
    assert denied > 100_000, d1
    assert d1["POLICY_DENIED"] == d0["POLICY_DENIED"]
    lost = f1["lost"] - f0["lost"]
    assert lost > 0
    all_drops = sum(d1.values()) - sum(d0.values())
    emitted = (f1["submitted"] - f0["submitted"]) + lost
    assert emitted == all_drops + (f1["new_flows"] - f0["new_flows"])  # one event attempt per drop / new flow
    st = datapath.status()
    assert st["flow_events"]["lost"] == f1["lost"] and st["drop_counters"]["POLICY_DENY_RULE"] >= denied


def _settled(datapath, timeout: float = 20) -> tuple[dict, dict]:
    """Drop and flow counters once two reads in a row agree: the sender has exited, but packets it
    queued on the veth may still be going through the programs in softirq, and the counts are
    compared with each other, so they must come from a quiet moment."""
    prev = datapath.drop_counters(), datapath.flow_counters()
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.1)
        cur = datapath.drop_counters(), datapath.flow_counters()
        if cur == prev:
            return cur
        assert time.monotonic() < deadline, "counters still moving"
        prev = cur


_BLAST = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(150_000):
    s.sendto(b"x" * 18, ("{ip}", 9))
"""
