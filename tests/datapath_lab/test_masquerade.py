"""egress.masqueradeEnabled: pod traffic leaving the cluster CIDR is SNATed to the node, or not."""

from __future__ import annotations

import pytest

from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf]


def spec(masquerade: bool) -> dict:
    return {
        "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan",
                    "egress": {"masqueradeEnabled": masquerade}},
        "underlay": {"cidr": "172.30.0.0/24"},
        "nodes": [{"name": "node-1"}],
        "namespaces": [{"name": "x"}],
        "pods": [{"name": "a", "namespace": "x", "labels": {"pod": "a"}}],
    }


@pytest.mark.parametrize("enabled", [True, False])
def test_egress_to_outside_the_cluster_is_masqueraded_only_when_enabled(tmp_path, enabled):
    lab = LabUnderTest(spec(enabled), tmp_path)
    try:
        lab.up()
        node = lab.node_netns()
        rules = lab.run_in(node, "nft", "list", "table", "ip", "novanet")
        assert (rules.returncode == 0 and "masquerade" in rules.stdout) is enabled
        # The underlay bridge address is "outside": it has no route back to pod addresses, so a
        # reply only comes back if the node rewrote the source to its own address.
        outside = lab.status()["underlay"]["gateway"]
        ok = lab.run_in(lab.pod_netns("x/a"), "ping", "-c", "2", "-W", "1", outside).returncode == 0
        assert ok is enabled
    finally:
        lab.down()
