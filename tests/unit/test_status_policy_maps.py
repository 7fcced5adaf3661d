"""``novanetctl status``: a line for the policy maps only while endpoints are failed closed
because the maps are full (otherwise the block is the guide's)."""

from __future__ import annotations

from novanet_core.cli.novanetctl import status_text

BASE = {"nodeName": "n1", "routingMode": "overlay", "tunnelProtocol": "vxlan", "nodeIP": "172.30.0.2",
        "podCIDR": "10.42.0.0/24", "clusterCIDR": "10.42.0.0/16", "mtu": 1450, "defaultDeny": False,
        "endpoints": 3, "policies": 1, "tunnels": 2, "identities": 2, "datapath": "ebpf", "ready": True}


def test_no_policy_maps_line_without_pressure() -> None:
    st = {**BASE, "dataplane": {"connected": True, "policy_maps": {"failedClosed": [], "fullEvents": 2}}}
    assert "Policy Maps" not in status_text(st)


def test_failed_closed_endpoints_are_shown() -> None:
    st = {**BASE, "dataplane": {"connected": True, "policy_maps": {"failedClosed": ["10.42.0.7", "10.42.0.9"]}}}
    lines = status_text(st).splitlines()
    line = next(x for x in lines if x.startswith("Policy Maps:"))
    assert "FULL: 2 endpoint(s) failed closed (POLICY_MAP_FULL): 10.42.0.7, 10.42.0.9" in line
    assert lines.index(line) < lines.index("Endpoints:         3")
