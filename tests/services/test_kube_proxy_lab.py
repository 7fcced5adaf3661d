"""kube-proxy next to NovaNet (``kubeProxyReplacement: false``), in a real 1-node dual-stack lab with
the lab's emulated kube-proxy rules (iptables and nftables modes, one proxier per family): the lab's
Service objects, slices and rules, and real packets to ClusterIPs and NodePorts from a host process,
from the underlay, and from pods, in each family (the Services are RequireDualStack)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.overlay.helpers import wait_for
from tests.services.helpers import apply, node_rules, probe_service, service, spec
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]


def dual_stack_spec(mode: str) -> dict[str, Any]:
    s = spec(kubeProxyReplacement=False, kubeProxy=mode, clusterCIDR="10.42.0.0/16,fd00:42::/48",
             serviceCIDR="10.96.0.0/12,fd00:96::/108")
    s["underlay"] = {"family": "dual"}
    s["services"] = [{**svc, "ipFamilyPolicy": "RequireDualStack"} for svc in s["services"]]
    return s


# Every test runs in both modes; in make test the nftables lab takes only the pods' packets of both
# families (ClusterIP and nodePort, the prerouting path), the rest there is in the long run: their
# subject is the same in both modes (the lab's objects, how it follows changes), or
# tests/lab/test_kube_proxy_rules.py checks it per mode in a netns (each family's
# rules, the kernel taking them, stale chains pruned).
BOTH = pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)
IPTABLES_NFTABLES_LONG = pytest.mark.parametrize(
    "lab", ["iptables", pytest.param("nftables", marks=pytest.mark.long)], indirect=True)


def by_family(res: list[dict[str, Any]]) -> dict[tuple[int, int, str], bool]:
    return {(r["family"], r["port"], r["protocol"]): r["allowed"] for r in res}


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(dual_stack_spec(request.param), tmp_path_factory.mktemp(f"kp-{request.param}"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@IPTABLES_NFTABLES_LONG
def test_status_lists_services_with_their_allocations_and_endpoints(lab: LabUnderTest) -> None:
    web = service(lab, "default/web")
    assert web["type"] == "ClusterIP" and web["clusterIP"] == "10.96.1.1"  # first address above the static band
    assert web["clusterIPs"][0] == "10.96.1.1" and ipaddress.ip_address(web["clusterIPs"][1]).version == 6
    assert [(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in web["ports"]] == [
        ("http", 80, "TCP", "http"), ("echo", 9000, "UDP", "echo")]
    for version in (4, 6):  # a slice per family
        eps = [e for e in web["endpoints"] if ipaddress.ip_address(e["ip"]).version == version]
        assert sorted((e["pod"], e["ready"], e["node"]) for e in eps) == [
            ("default/web-1", True, "node-1"), ("default/web-2", True, "node-1")]
        assert {(p["name"], p["port"]) for p in eps[0]["ports"]} == {("http", 8080), ("echo", 9000)}
    np = service(lab, "default/web-np")
    assert [p["nodePort"] for p in np["ports"]] == [30080, 30090]


@IPTABLES_NFTABLES_LONG
def test_a_host_process_and_the_underlay_reach_services_through_kube_proxys_rules(lab: LabUnderTest) -> None:
    # Each family through its own proxier's rules: the ClusterIP of the family, the node's
    # address of the family on the nodePort.
    res = probe_service(lab, "default/web", "--from-node", "node-1")
    assert by_family(res) == {(f, port, proto): True for f in (4, 6) for port, proto in ((80, "TCP"), (9000, "UDP"))}
    assert {r["backend"] for r in res} <= {"default/web-1", "default/web-2"}
    res = probe_service(lab, "default/web-np", "--node-port", "node-1", "--from-underlay")
    assert by_family(res) == {(f, port, proto): True for f in (4, 6) for port, proto in ((30080, "TCP"), (30090, "UDP"))}
    assert all(r["from"] == "underlay" and r["to"] == "svc:default/web-np" for r in res)


@BOTH
def test_a_pod_reaches_a_service_through_kube_proxys_rules(lab: LabUnderTest) -> None:
    # The failure: the backend's reply left through bpf_redirect_peer and never met
    # conntrack, so the client saw 10.42.0.x answer a SYN it sent to the ClusterIP and reset it.
    # The same in each family, to the ClusterIP and to its node's address on the nodePort.
    res = probe_service(lab, "default/web", "--from", "default/client")
    assert by_family(res) == {(f, port, proto): True for f in (4, 6) for port, proto in ((80, "TCP"), (9000, "UDP"))}
    assert all(r["to"] == "svc:default/web" for r in res)
    assert {r["backend"] for r in res if r["family"] == 6} <= {"default/web-1", "default/web-2"}
    res = probe_service(lab, "default/web-np", "--node-port", "node-1", "--from", "default/client")
    assert by_family(res) == {(f, port, proto): True for f in (4, 6) for port, proto in ((30080, "TCP"), (30090, "UDP"))}


@IPTABLES_NFTABLES_LONG
def test_each_family_has_its_own_proxiers_rules(lab: LabUnderTest) -> None:
    # The IPv6 proxier's rules (ip6tables / ip6 kube-proxy) carry the IPv6 ClusterIP and
    # endpoints; the IPv4 proxier's carry none of them.
    web = service(lab, "default/web")
    vip6 = web["clusterIPs"][1]
    rules4, rules6 = node_rules(lab, family=4), node_rules(lab, family=6)
    assert vip6 in rules6 and "10.96.1.1" not in rules6 and vip6 not in rules4
    ips6 = [e["ip"] for e in web["endpoints"] if ipaddress.ip_address(e["ip"]).version == 6]
    assert len(ips6) == 2 and all(f"[{ip}]:8080" in rules6 and ip not in rules4 for ip in ips6)


EGRESS_TO_WEB_HTTP = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-web-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 8080, protocol: TCP}]}]
"""


@pytest.mark.long  # make test's time; checked to fail without nv_kp_frontend6 (TCP 80 denied too)
@BOTH
def test_egress_policy_is_decided_on_the_translated_ipv6_packet(lab: LabUnderTest, tmp_path: Path) -> None:
    # The client may send to the web pods on TCP 8080 only. Its packet to an IPv6 ClusterIP names
    # no pod until kube-proxy's DNAT, so NovaNet decides the egress on the translated packet: TCP 80
    # (to 8080) passes, UDP 9000 (to the pods' 9000) is denied after the DNAT. (IPv4's: the
    # datapath test tests/bpf/test_services.py::test_kube_proxy_egress_policy_decided_after_the_dnat.)
    assert "networkpolicy/default/client-to-web-http created" in apply(lab, tmp_path, EGRESS_TO_WEB_HTTP)
    try:
        seen: list[dict[tuple[int, str], bool]] = []

        def verdicts() -> bool:
            res = probe_service(lab, "default/web", "--from", "default/client", "--family", "6")
            seen.append(by_family(res))
            return seen[-1] == {(6, 80, "TCP"): True, (6, 9000, "UDP"): False}

        assert wait_for(verdicts, timeout=60), seen[-1]
    finally:
        lab.cli("lab", "delete", "-f", str(tmp_path / "apply.yaml"))


@IPTABLES_NFTABLES_LONG
def test_rules_follow_readiness_and_service_changes(lab: LabUnderTest, tmp_path: Path) -> None:
    web = service(lab, "default/web")
    ip2 = next(e["ip"] for e in web["endpoints"] if e["pod"] == "default/web-2" and "." in e["ip"])
    rules = node_rules(lab)
    assert web["clusterIP"] in rules and f"{ip2}:8080" in rules
    if "KUBE-SVC-" in rules:
        assert re.search(r"-A KUBE-SVC-\S+ .*-m statistic --mode random --probability 0\.5", rules)
    else:
        assert "numgen random mod 2 vmap" in rules
    not_ready = """apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec:
  containers: [{name: server, ports: [{name: http, containerPort: 8080}, {name: echo, containerPort: 9000, protocol: UDP}]}]
status:
  conditions: [{type: Ready, status: "False"}]
"""
    assert "pod/default/web-2 configured" in apply(lab, tmp_path, not_ready)
    endpoints = {e["pod"]: e for e in service(lab, "default/web")["endpoints"]}
    assert endpoints["default/web-2"]["ready"] is False and endpoints["default/web-2"]["serving"] is False
    assert f"{ip2}:8080" not in node_rules(lab)  # kube-proxy sends no new connection to it
    assert "pod/default/web-2 configured" in apply(lab, tmp_path, not_ready.replace('"False"', '"True"'))
    assert f"{ip2}:8080" in node_rules(lab)
    extra = """apiVersion: v1
kind: Service
metadata: {name: extra, namespace: default}
spec: {selector: {app: web}, ports: [{port: 7070, targetPort: 8080}]}
"""
    assert "service/default/extra created" in apply(lab, tmp_path, extra)
    ip = service(lab, "default/extra")["clusterIP"]
    assert ip in node_rules(lab)
    res = probe_service(lab, "default/extra", "--from-node", "node-1", "--family", "4")
    assert [r["allowed"] for r in res] == [True]
    (tmp_path / "extra.yaml").write_text(extra)
    lab.cli("lab", "delete", "-f", str(tmp_path / "extra.yaml"))
    assert ip not in node_rules(lab) and all(s["name"] != "extra" for s in lab.status()["services"])
