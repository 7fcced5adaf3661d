"""The full Service matrix (``make test-long``): 3-node labs in each tunnel protocol and native
routing, in both ``kubeProxyReplacement`` modes (and kube-proxy's iptables and nftables modes for
``false``): every pod reaches every Service over TCP and UDP with the backend on its own node and on
other nodes, host processes reach them, and NodePorts answer from the underlay on every node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.services.helpers import WEB_PORTS, probe_service
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow,
              pytest.mark.long]

ROUTING: dict[str, dict[str, Any]] = {
    "vxlan": {"routingMode": "overlay", "tunnelProtocol": "vxlan"},
    "geneve": {"routingMode": "overlay", "tunnelProtocol": "geneve"},
    "native": {"routingMode": "native", "routing": {"type": "frr-bgp", "settings": {"reconcileInterval": 2}}},
}
PROXIES: dict[str, dict[str, Any]] = {
    "replacement": {"kubeProxyReplacement": True},
    "kube-proxy-iptables": {"kubeProxyReplacement": False, "kubeProxy": "iptables"},
    "kube-proxy-nftables": {"kubeProxyReplacement": False, "kubeProxy": "nftables"},
}
NODES = ("node-1", "node-2", "node-3")
# One backend each on node-1 and node-2, so that "same node" and "other node" are decided, not
# left to the random pick; "web" has both.
BACKENDS = {"web-a": ["default/web-1"], "web-b": ["default/web-2"], "web": ["default/web-1", "default/web-2"]}


def matrix_spec(routing: str, proxy: str) -> dict[str, Any]:
    services = []
    for i, (name, pods) in enumerate(BACKENDS.items()):
        selector = {"app": "web"} if len(pods) > 1 else {"instance": pods[0].split("/")[1]}
        services.append({"name": name, "namespace": "default", "type": "NodePort", "selector": selector,
                         "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080 + i},
                                   {"name": "echo", "port": 9000, "protocol": "UDP", "targetPort": "echo",
                                    "nodePort": 30090 + i}]})
    pods = [{"name": f"web-{i}", "node": f"node-{i}", "labels": {"app": "web", "instance": f"web-{i}"},
             "ports": WEB_PORTS} for i in (1, 2)]
    pods += [{"name": f"client-{n}", "node": n, "labels": {"app": "client"}} for n in NODES]
    return {"cluster": {"clusterCIDR": "10.42.0.0/16", "policy": {"defaultDeny": False}, **ROUTING[routing],
                        **PROXIES[proxy]},
            "nodes": [{"name": n} for n in NODES], "pods": pods, "services": services}


@pytest.fixture(scope="module", params=[(r, p) for r in ROUTING for p in PROXIES], ids=lambda rp: f"{rp[0]}-{rp[1]}")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabUnderTest, str]]:
    routing, proxy = request.param
    lab = LabUnderTest(matrix_spec(routing, proxy), tmp_path_factory.mktemp(f"m-{routing}-{proxy}"))
    try:
        lab.up()
        yield lab, proxy
    finally:
        lab.down()


def _expect(results: list[dict[str, Any]], svc: str, ports: set[tuple[int, str]]) -> None:
    assert {(r["port"], r["protocol"]) for r in results} == ports
    bad = [r for r in results if not r["allowed"] or r.get("backend") not in BACKENDS[svc]]
    assert not bad, bad


CLUSTER_PORTS = {(80, "TCP"), (9000, "UDP")}


def test_every_pod_reaches_every_service_on_its_node_and_across(lab: tuple[LabUnderTest, str]) -> None:
    lab_, _ = lab
    for svc in BACKENDS:
        res = probe_service(lab_, f"default/{svc}", "--from", "default")
        assert {r["from"] for r in res} == {"default/web-1", "default/web-2", *(f"default/client-{n}" for n in NODES)}
        _expect(res, svc, CLUSTER_PORTS)


def test_host_processes_reach_services(lab: tuple[LabUnderTest, str]) -> None:
    lab_, _ = lab
    for svc in BACKENDS:
        res = probe_service(lab_, f"default/{svc}", *(a for n in NODES for a in ("--from-node", n)))
        assert {r["from"] for r in res} == {f"node:{n}" for n in NODES}
        _expect(res, svc, CLUSTER_PORTS)


def test_node_ports_answer_from_the_underlay_on_every_node(lab: tuple[LabUnderTest, str]) -> None:
    lab_, _ = lab
    for i, svc in enumerate(BACKENDS):
        for node in NODES:
            res = probe_service(lab_, f"default/{svc}", "--node-port", node, "--from-underlay")
            _expect(res, svc, {(30080 + i, "TCP"), (30090 + i, "UDP")})
