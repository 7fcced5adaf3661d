"""Services through the eBPF datapath in a 3-node lab (vxlan, geneve, native): every client path
with backends on the same and on other nodes, NodePort from the underlay, and the kube-proxy
compatible mode with kube-proxy-style DNAT rules in the node netns.

Pods: x/a (client) and x/d on node-1, x/b on node-2, x/c on node-3. The Service and its
EndpointSlice are written into the lab's manifest directory (the agents resolve and program
them, as from the Kubernetes API).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.overlay.helpers import dataplane, wait_for
from tests.support.lab import BIN, LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow,
              pytest.mark.long]

ROOT = Path(__file__).resolve().parents[2]
CLIENT = str(ROOT / "tests" / "support" / "svc_client.py")
VIP = "10.96.50.10"
NODEPORT = 30080
PORTS = [{"name": "tcp", "port": 80, "protocol": "TCP"}, {"name": "udp", "port": 80, "protocol": "UDP"}]
PLACEMENT = {"x/a": "node-1", "x/d": "node-1", "x/b": "node-2", "x/c": "node-3"}
BACKENDS = ("x/b", "x/c", "x/d")


def spec(mode: str, kpr: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {"clusterCIDR": "10.42.0.0/16", "datapath": "ebpf", "kubeProxyReplacement": kpr,
                               "policy": {"defaultDeny": False}}
    if mode == "native":
        native = yaml.safe_load((ROOT / "examples" / "lab-native.yaml").read_text())["cluster"]
        cluster.update(routingMode="native", routing=native["routing"])
    else:
        cluster.update(routingMode="overlay", tunnelProtocol=mode)
    return {
        "cluster": cluster,
        "underlay": {"cidr": "172.30.0.0/24", "mtu": 1500},
        "nodes": [{"name": "node-1"}, {"name": "node-2"}, {"name": "node-3"}],
        "namespaces": [{"name": "x", "labels": {"ns": "x"}}],
        "pods": [{"name": p.split("/")[1], "namespace": "x", "node": n, "labels": {"app": "web"}, "ports": PORTS}
                 for p, n in PLACEMENT.items()],
    }


def service_objects(lab: LabUnderTest, name: str = "web", vip: str = VIP, nodeport: int = NODEPORT,
                    local: bool = False, backends: tuple[str, ...] = BACKENDS) -> list[dict[str, Any]]:
    ports = [{"name": p["name"], "port": 80, "targetPort": 80, "protocol": p["protocol"], "nodePort": nodeport}
             for p in PORTS]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "x"},
           "spec": {"type": "NodePort", "clusterIP": vip, "ports": ports,
                    "externalTrafficPolicy": "Local" if local else "Cluster"}}
    eps = [{"addresses": [lab.pod_ip(p)], "conditions": {"ready": True}, "nodeName": PLACEMENT[p]} for p in backends]
    slc = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": f"{name}-1", "namespace": "x", "labels": {"kubernetes.io/service-name": name}},
           "addressType": "IPv4", "ports": [{"name": p["name"], "port": 80, "protocol": p["protocol"]} for p in PORTS],
           "endpoints": eps}
    return [svc, slc]


def publish(lab: LabUnderTest, objs: list[dict[str, Any]], expect: int | None) -> None:
    """Write the objects into the lab's manifests; with ``expect``, wait until node-1's datapath
    holds that many frontends."""
    from novanet_lab.manifests import ManifestWriter

    w = ManifestWriter(lab.paths.manifest_dir)
    for o in objs:
        w.write(o)
    w.bump()
    if expect is not None:
        assert wait_for(lambda: len(dataplane(lab, "node-1", "dp.service.list")) == expect, timeout=30), \
            dataplane(lab, "node-1", "dp.service.list")


def run_client(lab: LabUnderTest, argv: list[str]) -> dict[str, list[str]]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def from_pod(lab: LabUnderTest, pod: str, ip: str, port: int, n: int, proto: str, socket_level: bool) -> dict:
    """``socket_level``: through ``novanet lab exec`` (the node's cgroup: connect/sendmsg hooks);
    else a bare nsenter, outside the cgroup (the per-packet path)."""
    args = ["python3", CLIENT, ip, str(port), str(n), proto]
    if socket_level:
        return run_client(lab, [str(BIN / "novanet"), "lab", "exec", "--name", lab.name, pod, "--", *args])
    return run_client(lab, ["nsenter", f"--net={lab.pod_netns(pod)}", *args])


def translations(lab: LabUnderTest, node: str = "node-1") -> dict[str, int]:
    return dataplane(lab, node, "ebpf.status")["services"]["translations"]


# ------------------------------------------------------------------ kubeProxyReplacement: true


@pytest.fixture(scope="module", params=["vxlan", "geneve", "native"])
def slab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(spec(request.param, True), tmp_path_factory.mktemp(f"svc-{request.param}"))
    try:
        lab.up()
        publish(lab, service_objects(lab), expect=4)  # TCP+UDP ClusterIP, TCP+UDP NodePort
        publish(lab, service_objects(lab, "web-local", "10.96.50.11", NODEPORT + 1, local=True), expect=8)
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("socket_level", [True, False], ids=["socket", "packet"])
def test_clusterip_reaches_local_and_remote_backends(slab: LabUnderTest, socket_level: bool) -> None:
    before = translations(slab)
    for proto in ("tcp", "udp"):
        got = from_pod(slab, "x/a", VIP, 80, 30, proto, socket_level)
        assert got["errors"] == [], got
        assert set(got["answers"]) == set(BACKENDS)  # x/d on this node, x/b and x/c on the others
        assert set(got["peers"]) == {f"{VIP}:80"}
    after = translations(slab)
    moved = {k for k in ("socket", "packet") if after[k] > before[k]}
    assert moved == {"socket" if socket_level else "packet"}


def test_nodeport_from_the_underlay(slab: LabUnderTest) -> None:
    node1 = next(n["ip"] for n in slab.status()["nodes"] if n["name"] == "node-1")
    under = f"--net={slab.paths.netns_path(slab.paths.underlay_netns)}"
    for proto in ("tcp", "udp"):
        got = run_client(slab, ["nsenter", under, "python3", CLIENT, node1, str(NODEPORT), "30", proto])
        assert got["errors"] == [] and set(got["answers"]) == set(BACKENDS), got  # Cluster: remote ones too
        loc = run_client(slab, ["nsenter", under, "python3", CLIENT, node1, str(NODEPORT + 1), "10", proto])
        assert loc["errors"] == [] and set(loc["answers"]) == {"x/d"}, loc  # Local: node-1's own backend
    assert translations(slab)["nodeport"] >= 80


# ------------------------------------------------------------------ kubeProxyReplacement: false


def kube_proxy_rules(vip: str, backends: list[str]) -> str:
    """kube-proxy's iptables shape, reduced to what the datapath sees: KUBE-SERVICES from
    PREROUTING and OUTPUT, one KUBE-SVC chain spreading over KUBE-SEP chains with the statistic
    match, each DNATing to one backend (services-control's emulation writes the full shape)."""
    lines = ["*nat", ":KUBE-SERVICES - [0:0]"]
    for proto in ("tcp", "udp"):
        lines.append(f":KUBE-SVC-{proto.upper()} - [0:0]")
        for i in range(len(backends)):
            lines.append(f":KUBE-SEP-{proto.upper()}{i} - [0:0]")
    lines += ["-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES"]
    for proto in ("tcp", "udp"):
        svc = f"KUBE-SVC-{proto.upper()}"
        lines.append(f"-A KUBE-SERVICES -d {vip}/32 -p {proto} --dport 80 -j {svc}")
        n = len(backends)
        for i, ip in enumerate(backends):
            sep = f"KUBE-SEP-{proto.upper()}{i}"
            prob = f" -m statistic --mode random --probability {1 / (n - i):.5f}" if i < n - 1 else ""
            lines.append(f"-A {svc}{prob} -j {sep}")
            lines.append(f"-A {sep} -p {proto} -j DNAT --to-destination {ip}:80")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", params=["vxlan", "geneve", "native"])
def kplab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(spec(request.param, False), tmp_path_factory.mktemp(f"kp-{request.param}"))
    try:
        lab.up()
        publish(lab, service_objects(lab), expect=None)
        # the agent sends the backend set (dp.service.backends), no frontend
        assert wait_for(lambda: dataplane(lab, "node-1", "ebpf.status")["services"]["entries"]["kp_backends"] == 6,
                        timeout=30)
        rules = kube_proxy_rules(VIP, [lab.pod_ip(p) for p in BACKENDS])
        subprocess.run(["nsenter", f"--net={lab.node_netns('node-1')}", "iptables-restore", "--noflush"],
                       input=rules, text=True, check=True)
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("socket_level", [True, False], ids=["lab-exec", "nsenter"])
def test_kube_proxy_dnat_same_node_and_across_nodes(kplab: LabUnderTest, socket_level: bool) -> None:
    assert dataplane(kplab, "node-1", "dp.service.list") == []
    for proto in ("tcp", "udp"):
        got = from_pod(kplab, "x/a", VIP, 80, 30, proto, socket_level)
        assert got["errors"] == [], got
        assert set(got["answers"]) == set(BACKENDS)  # x/d same node, x/b and x/c across nodes
        assert set(got["peers"]) == {f"{VIP}:80"}  # conntrack reversed the DNAT for every reply
    assert translations(kplab) == {"socket": 0, "packet": 0, "nodeport": 0, "reverse_socket": 0, "socket6": 0,
                                   "reverse_socket6": 0}
