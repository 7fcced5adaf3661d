"""Pins removed from bpffs under a running dataplane: a map is pinned again from the fd the
dataplane holds (same map, same entries), a pod's tcx links are attached again, traffic and policy
keep working, and the repairs are reported in the status."""

from __future__ import annotations

import os

import pytest

from novanet_core.bpf import pinned, syscall
from tests.bpf.topo import Topology, ping, wait_for

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


def test_removed_map_and_link_pins_are_repaired_and_reported(topo: Topology, datapath) -> None:
    from novanet_ebpf_policy.layouts import MAPS

    a, b = topo.pods["a"], topo.pods["b"]
    assert ping(a, b.ip, count=2)[1] == 2
    ep_pin = pinned.versioned_path(topo.bpf_root, MAPS["endpoints"].spec)
    before_id = pinned.pinned_info(ep_pin).id
    links = [os.path.join(topo.bpf_root, "links", f"{a.host_if}_{d}") for d in ("ingress", "egress")]
    assert all(os.path.exists(p) for p in links)
    os.unlink(ep_pin)
    for p in links:
        os.unlink(p)  # the link's only reference: the programs are off a's veth now
    wait_for(lambda: os.path.exists(ep_pin) and all(os.path.exists(p) for p in links), "pins not repaired")
    assert pinned.pinned_info(ep_pin).id == before_id  # the same map, entries and all
    fd = syscall.obj_get(ep_pin)
    try:
        assert sum(1 for _ in syscall.map_keys(fd, 4)) == len(topo.pods)
    finally:
        os.close(fd)
    pins = datapath.status()["pins"]
    assert pins["mapsRepinned"] >= 1 and pins["linksReattached"] >= 1
    assert any("endpoints" in r for r in pins["last"]) or pins["mapsRepinned"] >= 1
    # the repaired datapath forwards and enforces: a deny rule from a to b takes effect
    assert ping(a, b.ip, count=2)[1] == 2
    datapath.upsert_policy({"src_identity": a.identity, "dst_identity": b.identity, "protocol": 1, "action": "deny"})
    assert ping(a, b.ip, count=2, deadline=3)[1] == 0
    assert datapath.drop_counters()["POLICY_DENY_RULE"] > 0
