"""The full Service matrix (``make test-long``): 3-node labs in each tunnel protocol and native
routing, in both ``kubeProxyReplacement`` modes (and kube-proxy's iptables and nftables modes for
``false``): every pod reaches every Service over TCP and UDP with the backend on its own node and on
other nodes, host processes reach them, and NodePorts answer from the underlay on every node.
``make test`` runs one short form of it (vxlan, replacement: pods and one NodePort)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.services.helpers import WEB_PORTS, probe_service
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

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


def _lab(routing: str, proxy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(matrix_spec(routing, proxy), tmp_path_factory.mktemp(f"m-{routing}-{proxy}"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module", params=[pytest.param((r, p), marks=pytest.mark.long, id=f"{r}-{p}")
                                        for r in ROUTING for p in PROXIES])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabUnderTest, str]]:
    routing, proxy = request.param
    for lab_ in _lab(routing, proxy, tmp_path_factory):
        yield lab_, proxy


@pytest.fixture(scope="module")
def short_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    yield from _lab("vxlan", "replacement", tmp_path_factory)


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


def test_short_form_pods_reach_a_service_on_their_node_and_across_and_its_node_port(short_lab: LabUnderTest) -> None:
    """make test's cell: every pod to the Service whose one backend is on node-2 (same node for
    client-node-2 and web-2, another node for the other three), TCP and UDP; its NodePort from the
    underlay through node-1 (a backend on another node)."""
    res = probe_service(short_lab, "default/web-b", "--from", "default")
    assert {r["from"] for r in res} == {"default/web-1", "default/web-2", *(f"default/client-{n}" for n in NODES)}
    _expect(res, "web-b", CLUSTER_PORTS)
    res = probe_service(short_lab, "default/web-b", "--node-port", "node-1", "--from-underlay")
    _expect(res, "web-b", {(30081, "TCP"), (30091, "UDP")})
