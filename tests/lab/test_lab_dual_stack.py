"""Dual-stack and IPv6 labs end to end: pods with an address per family, probed per family over
TCP, UDP and ICMP, shown by ``lab status`` and ``novanetctl``; a configuration the agent refuses
reported with the agent's message; and (long) the 3-node per-family cells over VXLAN.

The short test reuses its lab for restarts under traffic in both families (agent and dataplane
SIGKILLed) and for ``down`` after a crash (agent killed, state file torn), so the dual-stack checks
cost ``make test`` no lab of their own."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from novanet_lab import agents, procs
from novanet_lab.netns import list_netns
from novanet_lab.paths import LabPaths

from tests.support.family_traffic import FamilyTraffic, addresses, kill_and_restart_under_traffic
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf]

PORTS = [
    {"name": "serve-80-tcp", "port": 80, "protocol": "TCP"},
    {"name": "serve-80-udp", "port": 80, "protocol": "UDP"},
]
DUAL_CIDR = "10.42.0.0/16,fd00:42::/48"
PODS = ["x/a", "x/b", "y/a"]


def _pods(keys: list[str], nodes: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, key in enumerate(keys):
        ns, name = key.split("/")
        pod: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"pod": name}, "ports": PORTS}
        if nodes:
            pod["node"] = nodes[i % len(nodes)]
        out.append(pod)
    return out


def one_node_ebpf() -> dict[str, Any]:
    """examples/lab-dual-stack-1node.yaml's configuration."""
    return {
        "cluster": {
            "clusterCIDR": DUAL_CIDR,
            "datapath": "ebpf",
            "tunnelProtocol": "vxlan",
            "pluginSettings": {"vxlan": {"bpf": "off"}},
        },
        "underlay": {"family": "dual"},
        "nodes": [{"name": "node-1"}],
        "namespaces": [{"name": "x", "labels": {"ns": "x"}}, {"name": "y", "labels": {"ns": "y"}}],
        "pods": _pods(PODS),
    }


@pytest.fixture
def new_lab(tmp_path: Path):
    made: list[LabUnderTest] = []

    def make(spec: dict[str, Any]) -> LabUnderTest:
        lab = LabUnderTest(spec, tmp_path / str(len(made)))
        made.append(lab)
        return lab

    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    try:
        yield make
    finally:
        for lab in made:
            lab.down()


def _by_pod(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{p['namespace']}/{p['name']}": p for p in status["pods"]}


def _probe(lab: LabUnderTest, *args: str) -> list[dict[str, Any]]:
    return json.loads(lab.cli("lab", "probe", "-o", "json", *args).stdout)["results"]


def _blocked(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(family, protocol, from, to, reason) of every probe that did not get through."""
    return [(r["family"], r["protocol"], r["from"], r["to"], r["reason"]) for r in rs if not r["allowed"]]


def _ping_all(lab: LabUnderTest, pods: dict[str, dict[str, Any]]) -> None:
    """ICMP (echo) from every pod to every other pod's every address: one ``lab exec`` per source."""
    for src in pods:
        ips = [ip for dst, p in pods.items() if dst != src for ip in p["ips"]]
        loop = "; ".join(f"ping -n -c1 -W3 {ip} >/dev/null || echo FAILED {ip}" for ip in ips)
        r = lab.cli("lab", "exec", src, "--", "sh", "-c", loop, check=False)
        assert r.returncode == 0 and "FAILED" not in r.stdout, f"ICMP from {src}: {r.stdout}{r.stderr}"


def _check_every_family(lab: LabUnderTest, pods: dict[str, dict[str, Any]], families: list[int]) -> None:
    """Every pod reaches every pod in each family over TCP, UDP (lab probe) and ICMP (ping)."""
    rs = _probe(lab)
    n = len(pods)
    assert len(rs) == n * n * 2 * len(families)
    blocked = _blocked(rs)
    # A failure says which cells, why (timeout, refused, ...), and whether they were still
    # blocked a moment later: a transient gap and a broken path need different hunts.
    assert blocked == [], f"blocked: {blocked}; probed again: {_blocked(_probe(lab))}"
    assert [r["family"] for r in rs] == sorted(r["family"] for r in rs)  # IPv4's matrix, then IPv6's
    assert {(r["family"], r["protocol"]) for r in rs} == {(f, p) for f in families for p in ("TCP", "UDP")}
    _ping_all(lab, pods)


def test_dual_stack_lab_then_down_after_a_crash(new_lab) -> None:
    lab = new_lab(one_node_ebpf())
    up = lab.up()
    assert up["healthy"] is True
    node = up["nodes"][0]
    assert node["podCIDRs"] == ["10.42.0.0/24", "fd00:42::/64"] and node["podCIDR"] == "10.42.0.0/24"
    assert node["ips"] == ["172.30.0.2", "fd00:172:30::2"] and node["ip"] == "172.30.0.2"
    assert node["agent"]["podCIDRs"] == node["podCIDRs"]
    assert up["underlay"]["gateways"] == ["172.30.0.1", "fd00:172:30::1"]
    pods = _by_pod(up)
    for key, p in pods.items():
        v4, v6 = (ipaddress.ip_address(ip) for ip in p["ips"])
        assert p["ip"] == str(v4) and v4 in ipaddress.ip_network("10.42.0.0/24"), key
        assert v6 in ipaddress.ip_network("fd00:42::/64"), key
    # the kubelet's view in the manifests: both addresses, the primary first
    manifest = yaml.safe_load((lab.paths.manifest_dir / "pod_x_a.yaml").read_text())
    assert manifest["status"]["podIPs"] == [{"ip": ip} for ip in pods["x/a"]["ips"]]

    _check_every_family(lab, pods, [4, 6])
    only6 = _probe(lab, "--family", "6", "--protocol", "TCP")
    assert len(only6) == 9 and {r["family"] for r in only6} == {6} and all(r["allowed"] for r in only6)
    table = lab.cli("lab", "probe", "--port", "80", "--protocol", "TCP").stdout
    assert [line for line in table.splitlines() if "allowed" in line] == [
        "TCP/80 IPv4: 9 allowed, 0 blocked",
        "TCP/80 IPv6: 9 allowed, 0 blocked",
    ]
    # novanetctl lists a dual-stack pod once per address
    listed = {(e["ip"], f"{e.get('namespace')}/{e.get('pod')}") for e in lab.ctl("endpoints")}
    assert {(ip, key) for key, p in pods.items() for ip in p["ips"]} <= listed
    text = lab.cli("lab", "status").stdout
    assert ",".join(pods["x/a"]["ips"]) in text

    # a killed agent and a killed dataplane, each restarted, under pings and a TCP stream per
    # family: nothing lost, both addresses kept everywhere (long form, 3 nodes: test_restart_families.py)
    before = addresses(lab)
    traffic = FamilyTraffic(lab, pairs=[("x/a", "x/b")], stream_pair=("x/a", "y/a"))
    report = kill_and_restart_under_traffic(lab, traffic, kills=1)
    assert {k: v for k, v in traffic.lost(report["last"]).items() if v} == {}
    assert all(st.ran_to_the_end and st.rates() and min(st.rates()) > 0 for st in traffic.streams), [
        st.out + st.err for st in traffic.streams
    ]
    assert addresses(lab) == before

    # down after a crash: agent killed, state file torn; everything is still found by name
    st = lab.status()
    pids = [st["nodes"][0][d]["pid"] for d in ("agent", "dataplane")] + [
        p["server"]["pid"] for p in st["pods"]
    ]
    os.kill(st["nodes"][0]["agent"]["pid"], signal.SIGKILL)
    lab.paths.state_file.write_text('{"name": "torn')
    assert lab.status()["phase"] == "broken"
    down = json.loads(lab.cli("lab", "down", "-o", "json").stdout)
    assert len(down["netns"]) == 6  # underlay, outside, node, three pods
    paths = LabPaths(lab.name)
    assert list_netns(paths.netns_prefix) == []
    assert [p for p in pids if p and procs.is_running(p)] == []
    assert procs.find_lab_processes([], agents.markers(paths)) == []
    assert not paths.bpf_dir.exists() and not paths.state_dir.exists() and not paths.run_dir.exists()


def _ipv6_underlay() -> dict[str, Any]:
    return {
        "cluster": {"clusterCIDR": "fd00:42::/48", "datapath": "kernel", "kubeProxyReplacement": False},
        "underlay": {"family": "IPv6"},
        "nodes": [{"name": "node-1"}],
        "pods": _pods(["default/a"]),
    }


@pytest.mark.long
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            _ipv6_underlay,
            "nodeIP: fd00:172:30::2 is IPv6: tunnelProtocol 'vxlan' runs over an IPv6 underlay with its BPF "
            "programs only (datapath: ebpf",
        ),
    ],
    ids=["ipv6-underlay-vxlan"],
)
def test_a_combination_the_agent_refuses_fails_up_with_the_agents_message(
    new_lab, spec, message: str
) -> None:
    """What a backend cannot carry only the agent knows: ``lab up`` reports its message (field
    first) and removes what it made. A cell starts passing once its backend carries the family:
    then it moves to the working cells below."""
    lab = new_lab(spec())
    r = lab.cli("lab", "up", "--spec", str(lab.spec_file), "-q", check=False)
    assert r.returncode == 1
    assert f"node node-1: novanet-agent refused its configuration: {message}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert list_netns(LabPaths(lab.name).netns_prefix) == []  # up removed what it made


THREE_NODES = ["node-1", "node-2", "node-3"]


KERNEL_VXLAN = {"datapath": "kernel", "kubeProxyReplacement": False, "tunnelProtocol": "vxlan"}


@pytest.mark.long
@pytest.mark.parametrize(
    ("cluster", "families", "underlay"),
    [
        ({"clusterCIDR": DUAL_CIDR, **KERNEL_VXLAN}, [4, 6], "dual"),
        ({"clusterCIDR": "fd00:42::/48", **KERNEL_VXLAN}, [6], "dual"),
        ({"clusterCIDR": DUAL_CIDR, "datapath": "ebpf", "tunnelProtocol": "vxlan"}, [4, 6], "dual"),
        ({"clusterCIDR": DUAL_CIDR, "datapath": "ebpf", "tunnelProtocol": "geneve"}, [4, 6], "dual"),
        ({"clusterCIDR": "fd00:42::/48", "datapath": "ebpf", "tunnelProtocol": "vxlan"}, [6], "IPv6"),
        ({"clusterCIDR": "fd00:42::/48", "datapath": "ebpf", "tunnelProtocol": "geneve"}, [6], "IPv6"),
        ({"clusterCIDR": DUAL_CIDR, "datapath": "ebpf", "tunnelProtocol": "geneve"}, [4, 6], "IPv6"),
    ],
    ids=[
        "dual-stack",
        "ipv6-only",
        "ebpf-vxlan-dual-stack",
        "ebpf-geneve-dual-stack",
        "ebpf-vxlan-ipv6-underlay",
        "ebpf-geneve-ipv6-underlay",
        "ebpf-geneve-dual-stack-over-ipv6-underlay",
    ],
)
def test_three_nodes_over_a_tunnel_every_pod_reaches_every_pod_per_family(
    new_lab, cluster: dict[str, Any], families: list[int], underlay: str
) -> None:
    """examples/lab-dual-stack-3node.yaml / lab-ipv6-3node.yaml: the kernel datapath, routes-only
    VXLAN over the IPv4 underlay; the eBPF datapath with the tunnel plugin's BPF programs (IPv6
    inner packets over the IPv4 underlay, docs/overlay.md); and examples/lab-ipv6-tunnel.yaml's
    IPv6-only labs, VXLAN and Geneve over an IPv6-only underlay (and Geneve carrying dual-stack pods,
    IPv4 inner packets too, over it). Most pairs cross nodes."""
    keys = ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c"]
    lab = new_lab(
        {
            "cluster": cluster,
            "underlay": {"family": underlay},
            "nodes": [{"name": n} for n in THREE_NODES],
            "namespaces": [{"name": "x"}, {"name": "y"}],
            "pods": _pods(keys, THREE_NODES),
        }
    )
    up = lab.up()
    assert up["healthy"] is True
    pods = _by_pod(up)
    assert all(len(p["ips"]) == len(families) for p in pods.values())
    _check_every_family(lab, pods, families)


@pytest.mark.long
@pytest.mark.parametrize(
    ("cluster_cidr", "underlay", "families"),
    [(DUAL_CIDR, "dual", [4, 6]), ("fd00:42::/48", "IPv6", [6])],
    ids=["dual-stack", "ipv6-only-underlay"],
)
def test_three_nodes_native_ebpf_routes_and_polices_each_family(
    new_lab, cluster_cidr: str, underlay: str, families: list[int]
) -> None:
    """examples/lab-native-dual-stack.yaml and lab-ipv6-native.yaml: FRR per node advertises its
    PodCIDRs (IPv6 over the IPv4 session, or IPv6 sessions on an IPv6-only underlay), lab up waits
    for every family's proto bgp routes, and the eBPF datapath enforces a NetworkPolicy across
    nodes in each family alike."""
    keys = ["x/a", "x/b", "x/c"]
    lab = new_lab(
        {
            "cluster": {"clusterCIDR": cluster_cidr, "routingMode": "native", "routing": {"type": "frr-bgp"}},
            "underlay": {"family": underlay},
            "nodes": [{"name": n} for n in THREE_NODES],
            "namespaces": [{"name": "x"}],
            "pods": _pods(keys, THREE_NODES),
        }
    )
    up = lab.up()
    assert up["healthy"] is True
    pods = _by_pod(up)
    _check_every_family(lab, pods, families)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "only-a", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}],
        },
    }
    (lab.spec_file.parent / "policy.yaml").write_text(yaml.safe_dump(policy))
    lab.cli("lab", "apply", "-q", "-f", str(lab.spec_file.parent / "policy.yaml"))
    rs = _probe(lab, "--to", "x/b", "--protocol", "TCP")
    assert {(r["family"], r["from"]) for r in rs if not r["allowed"]} == {(f, "x/c") for f in families}
    assert {(r["family"], r["from"]) for r in rs if r["allowed"]} == {
        (f, s) for f in families for s in ("x/a", "x/b")
    }
