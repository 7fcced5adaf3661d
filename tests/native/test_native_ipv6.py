"""Native routing of IPv6 PodCIDRs against real agents and a real FRR per node: two nodes joined by
a veth underlay learn each other's IPv6 PodCIDR over BGP (an IPv4 session carrying IPv6 unicast
on a dual-stack underlay; IPv6 sessions with BFD on an IPv6-only one), install it as a
``proto bgp`` route, and carry ping6 and TCP over IPv6 between pods on the two nodes. The long
form also takes one node off the underlay and records how long the other kept its route."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from novanet_lab import frr, procs
from novanet_lab.paths import LabPaths

from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
CLUSTER = {"dual": "10.44.0.0/16,fd00:44::/48", "v6": "fd00:44::/48"}
PODS = {"dual": {"a": "10.44.1.0/24,fd00:44:0:1::/64", "b": "10.44.2.0/24,fd00:44:0:2::/64"},
        "v6": {"a": "fd00:44:0:1::/64", "b": "fd00:44:0:2::/64"}}
UNDERLAY = {"dual": {"a": ["172.31.253.1", "fd00:fe::1"], "b": ["172.31.253.2", "fd00:fe::2"]},
            "v6": {"a": ["fd00:fe::1"], "b": ["fd00:fe::2"]}}
BFD = {"enabled": True, "receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}


@dataclass
class Pair:
    """Two native-routing nodes, each with FRR, an agent, a dataplane and one pod."""

    underlay: str
    paths: LabPaths
    nodes: dict[str, NodeUnderTest] = field(default_factory=dict)
    pods: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # netns path, [IPs]

    def routes6(self, node: str) -> list[dict]:
        out = sh("ip", "-n", self.nodes[node].ns, "-j", "-6", "route", "show", "proto", "bgp").stdout
        return json.loads(out or "[]")

    def vtysh_json(self, node: str, cmd: str):
        r = subprocess.run(["vtysh", "-N", frr.pathspace(self.paths, node), "-c", cmd], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)


def _wait(cond, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _v6(cidrs: str) -> str:
    return next(c for c in cidrs.split(",") if ":" in c)


@pytest.fixture
def pair(request) -> Iterator[Pair]:
    if shutil.which("vtysh") is None:
        pytest.fail("FRR is not installed (contrib/install-deps.sh installs the frr package)")
    underlay, datapath = request.param
    tag = uuid.uuid4().hex[:6]
    p = Pair(underlay, LabPaths(f"vn{tag}{secrets.token_hex(1)}"))
    ns: list[str] = []
    try:
        for n in ("a", "b"):
            ips = UNDERLAY[underlay][n]
            node = NodeUnderTest(datapath=datapath, pod_cidr=PODS[underlay][n], prefix="vn", extra={
                "clusterCIDR": CLUSTER[underlay], "nodeIP": ",".join(ips), "nodeName": f"vn{n}-{tag}",
                "routingMode": "native",
                "routing": {"type": "frr-bgp", "settings": {"pathspace": frr.pathspace(p.paths, n), "bfd": BFD,
                                                             "reconcileInterval": 1}}})
            p.nodes[n] = node
            ns.append(node.ns)
            sh("ip", "-n", node.ns, "link", "del", "eth0")
        sh("ip", "link", "add", f"vnu{tag}a", "netns", p.nodes["a"].ns, "type", "veth", "peer", "name", f"vnu{tag}b",
           "netns", p.nodes["b"].ns)
        for n, node in p.nodes.items():
            sh("ip", "-n", node.ns, "link", "set", f"vnu{tag}{n}", "name", "eth0")
            for ip in UNDERLAY[underlay][n]:
                # nodad: a tentative address is no next hop FRR can advertise
                sh("ip", "-n", node.ns, "addr", "add", f"{ip}/{64 if ':' in ip else 24}", "dev", "eth0",
                   *(["nodad"] if ":" in ip else []))
            sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
        manifests = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"vn{n}-{tag}"},
                      "spec": {"podCIDRs": PODS[underlay][n].split(",")},
                      "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in UNDERLAY[underlay][n]]}}
                     for n in ("a", "b")]
        for n, node in p.nodes.items():
            frr.start(p.paths, n, node.ns, {})
            node.write_manifest("nodes.yaml", manifests)
            node.start(wait=120.0)
        pods = []
        for n, node in p.nodes.items():
            netns = node.add_pod_netns()
            rc, res = node.cni("ADD", f"vn{tag}{n}", netns, args=f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=vp{n}")
            assert rc == 0, (res, node.last_stderr)
            ips = [i["address"].split("/")[0] for i in res["ips"]]
            p.pods[n] = (netns, ips)
            # what the API server would hold once the kubelet has reported the pod: the other node's
            # agent puts it in its endpoints (with the eBPF datapath, a cluster address that is
            # not an endpoint is dropped as NO_ROUTE)
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"vp{n}", "namespace": "default"},
                         "spec": {"nodeName": f"vn{n}-{tag}"},
                         "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
                                    "hostIP": UNDERLAY[underlay][n][0]}})
        for node in p.nodes.values():
            node.write_manifest("pods.yaml", pods)
        for n, node in p.nodes.items() if datapath == "ebpf" else ():  # the kernel's holds local pods only
            other = p.pods["b" if n == "a" else "a"][1]
            _wait(lambda node=node, other=other: set(other) <= {e.get("ip") for e in node.call("endpoints.list")},
                  f"node {n} has the other node's pod as an endpoint; agent log:\n{node.log('agent')}")
        yield p
    finally:
        procs.terminate(procs.find_lab_processes(ns, ()), grace=5)
        for node in p.nodes.values():
            node.close()
        frr.cleanup(p.paths)
        shutil.rmtree(p.paths.run_dir, ignore_errors=True)


def _learned(p: Pair, node: str, other: str) -> list[dict]:
    want = _v6(PODS[p.underlay][other])
    return [r for r in p.routes6(node) if r.get("dst") == want]


def _tcp6(client_ns: str, server_ns: str, server_ip: str) -> str:
    """One TCP connection over IPv6 from a pod to a pod: the server echoes what it got, reversed."""
    server = subprocess.Popen(
        ["nsenter", f"--net={server_ns}", sys.executable, "-c",
         "import socket;s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('::',8080));s.listen();print('up',flush=True);c,_=s.accept();c.sendall(c.recv(64)[::-1])"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up", server.stderr
        r = subprocess.run(
            ["nsenter", f"--net={client_ns}", sys.executable, "-c",
             f"import socket;c=socket.create_connection(('{server_ip}',8080),timeout=10);c.sendall(b'novanet');"
             "print(c.recv(64).decode())"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    finally:
        server.kill()
        server.wait(5)


def _check_reachable(p: Pair) -> None:
    for n, other in (("a", "b"), ("b", "a")):
        routes = _wait(lambda n=n, other=other: _learned(p, n, other), f"node {n} learns {other}'s IPv6 PodCIDR")
        assert routes[0]["dev"] == "eth0", routes
    a_ns, a_ips = p.pods["a"]
    b_ns, b_ips = p.pods["b"]
    for src_ns, dst_ips in ((a_ns, b_ips), (b_ns, a_ips)):
        for dst in dst_ips:
            r = sh("nsenter", f"--net={src_ns}", "ping", "-n", "-c", "2", "-W", "3", dst, check=False)
            assert r.returncode == 0, f"ping {dst}: {r.stdout}{r.stderr}"
    b6 = next(ip for ip in b_ips if ":" in ip)
    assert _tcp6(a_ns, b_ns, b6) == "tenavon"


# The eBPF form compiles the datapath on each node (over a minute here): long form.
@pytest.mark.parametrize("pair", [("dual", "kernel"), pytest.param(("dual", "ebpf"), marks=pytest.mark.long)],
                         indirect=True, ids=["kernel", "ebpf"])
def test_ipv6_podcidrs_over_an_ipv4_session_on_a_dual_stack_underlay(pair):
    _check_reachable(pair)
    # one IPv4 session carries both families; each side advertises both PodCIDRs
    st = pair.nodes["a"].call("routing.status")
    assert st["ipFamilies"] == [4, 6] and st["podCIDRs"] == PODS["dual"]["a"].split(","), st
    summary = pair.vtysh_json("a", "show bgp summary json")
    assert set(summary["ipv4Unicast"]["peers"]) == {"172.31.253.2"}
    assert summary["ipv6Unicast"]["peers"]["172.31.253.2"]["pfxRcd"] == 1, summary["ipv6Unicast"]
    v4 = json.loads(sh("ip", "-n", pair.nodes["a"].ns, "-j", "route", "show", "proto", "bgp").stdout)
    assert [r["dst"] for r in v4] == ["10.44.2.0/24"], v4
    # the PodCIDR's blackhole in each family (addresses no pod holds go nowhere)
    bh = json.loads(sh("ip", "-n", pair.nodes["a"].ns, "-j", "-6", "route", "show", "type", "blackhole").stdout)
    assert [r["dst"] for r in bh] == ["fd00:44:0:1::/64"], bh


@pytest.mark.long
@pytest.mark.parametrize("pair", [("v6", "ebpf")], indirect=True, ids=["ebpf"])
def test_ipv6_only_underlay_peers_over_ipv6_with_bfd_and_fails_over(pair):
    _check_reachable(pair)
    assert pair.nodes["a"].call("routing.status")["ipFamilies"] == [6]
    summary = pair.vtysh_json("a", "show bgp summary json")
    assert set(summary["ipv6Unicast"]["peers"]) == {"fd00:fe::2"}, summary
    _wait(lambda: any(b.get("peer") == "fd00:fe::2" and b.get("status") == "up"
                      for b in pair.vtysh_json("a", "show bfd peers json")), "BFD up on the IPv6 session")
    # node b goes silent on the underlay (its link stays up: only BFD or the hold timer can tell)
    b = pair.nodes["b"].ns
    nft = "table inet vnfail { chain in { type filter hook input priority -300; iifname eth0 drop; }; " \
          "chain out { type filter hook output priority -300; oifname eth0 drop; }; }"
    t0 = time.monotonic()
    subprocess.run(["ip", "netns", "exec", b, "nft", "-f", "-"], input=nft, text=True, check=True, timeout=20)
    _wait(lambda: not _learned(pair, "a", "b"), "node a withdraws b's IPv6 PodCIDR", timeout=30)
    took = time.monotonic() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "native-ipv6-failover.json").write_text(json.dumps(
        {"bfd": BFD, "withdrawnAfterSeconds": round(took, 3), "time": time.time()}, indent=1) + "\n")
    print(f"IPv6 PodCIDR withdrawn {took:.3f} s after its node went silent (BFD 100 ms x 3)")
    sh("ip", "netns", "exec", b, "nft", "delete", "table", "inet", "vnfail")
    _wait(lambda: _learned(pair, "a", "b"), "node a relearns b's IPv6 PodCIDR")
