"""kube-proxy next to NovaNet across nodes in each family: a pod on node-1 reaches a ClusterIP whose
only backend is on node-2, in a real 2-node dual-stack VXLAN lab with the lab's emulated kube-proxy
(iptables mode). The backend's reply arrives on node-1 through the tunnel and has to cross
node-1's stack, whose conntrack reverses kube-proxy's DNAT (``kp_backends`` / ``kp_backends6``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.overlay.helpers import dataplane, wait_for
from tests.services.helpers import WEB_PORTS, probe_service, spec
from tests.support.lab import LabUnderTest

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.lab,
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.long,
]

FAR_SERVICE = {
    "name": "far",
    "namespace": "default",
    "selector": {"app": "far"},
    "ipFamilyPolicy": "RequireDualStack",
    "ports": [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "echo", "port": 9000, "protocol": "UDP", "targetPort": "echo"},
    ],
}


@pytest.fixture(scope="module", params=["vxlan", "geneve"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    s = spec(
        2,
        tunnelProtocol=request.param,
        kubeProxyReplacement=False,
        kubeProxy="iptables",
        clusterCIDR="10.42.0.0/16,fd00:42::/48",
        serviceCIDR="10.96.0.0/12,fd00:96::/108",
    )
    s["underlay"] = {"family": "dual"}
    s["pods"] = [
        {"name": "far", "node": "node-2", "labels": {"app": "far"}, "ports": WEB_PORTS},
        {"name": "client", "node": "node-1", "labels": {"app": "client"}},
    ]
    s["services"] = [FAR_SERVICE]
    lab = LabUnderTest(s, Path(tmp_path_factory.mktemp(f"kp-far-{request.param}")))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("family", [4, 6])
def test_a_pod_reaches_a_clusterip_whose_only_backend_is_on_another_node(
    lab: LabUnderTest, family: int
) -> None:
    # Without the client node's conntrack on the reply path the client gets the SYN-ACK (and the
    # UDP answer) from the backend's address instead of the ClusterIP: TCP resets, UDP is lost.
    res = probe_service(lab, "default/far", "--from", "default/client", "--family", str(family))
    got = {(r["port"], r["protocol"]): (r["allowed"], r.get("backend")) for r in res}
    assert got == {(80, "TCP"): (True, "default/far"), (9000, "UDP"): (True, "default/far")}, res


def test_each_family_s_backends_are_in_its_map_on_every_node(lab: LabUnderTest) -> None:
    # far's backend ports per family (8080/TCP, 9000/UDP): kube-proxy may DNAT to them on any node.
    for node in ("node-1", "node-2"):
        assert wait_for(
            lambda node=node: (
                {
                    k: v
                    for k, v in dataplane(lab, node, "ebpf.status")["services"]["entries"].items()
                    if k.startswith("kp_backends")
                }
                == {"kp_backends": 2, "kp_backends6": 2}
            ),
            timeout=30,
        )
