"""Dual-stack and IPv6-only pods against real agents: CNI results with one address and gateway per
family at old and new cniVersions, both families in the pod, pings per family on one node and
across two nodes over VXLAN (IPv4 underlay, IPv6 inner), the IPAM files of both families freed by
DEL. (A carrier that cannot take IPv6 refusing the configuration: tests/unit/test_tunnel_ip_families.py;
IPv6 across nodes through the eBPF datapath: tests/overlay/test_ipv6_cross_node.py.)"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from novanet_core.agent import podnet
from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]

DUAL = {"clusterCIDR": "10.42.0.0/16,fd00:42::/48", "podCIDR": "10.42.7.0/24,fd00:42:0:7::/64"}


def _addrs(netns: str) -> dict[str, set[str]]:
    out = json.loads(sh("nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "eth0").stdout)
    got: dict[str, set[str]] = {"inet": set(), "inet6": set()}
    for a in out[0]["addr_info"]:
        if a.get("scope") == "global":
            got[a["family"]].add(f"{a['local']}/{a['prefixlen']}")
    return got


def _ping(netns: str, dst: str) -> None:
    p = sh("nsenter", f"--net={netns}", "ping", "-n", "-c", "2", "-W", "5", dst, check=False)
    assert p.returncode == 0, f"ping {dst} from {netns}: {p.stdout}{p.stderr}"


def _host_end_without_dad(node: NodeUnderTest, cid: str) -> None:
    """The host end's link-local address is usable right after ADD: the node's neighbour
    solicitations to the pod (other nodes' IPv6 traffic in native routing) go out from it, and the
    kernel sends none while it is tentative."""
    ns, ifname = f"--net=/run/netns/{node.ns}", podnet.host_ifname(cid)
    assert sh("nsenter", ns, "cat", f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad").stdout.strip() == "0"
    link = json.loads(sh("nsenter", ns, "ip", "-j", "-6", "addr", "show", "dev", ifname).stdout)[0]
    assert [a for a in link["addr_info"] if a.get("tentative")] == [], link


def _ip_files(node: NodeUnderTest) -> set[str]:
    d = Path(node.config["ipam"]["dataDir"])
    return {f.name for f in d.iterdir() if ":" in f.name or f.name.count(".") == 3} if d.exists() else set()


@pytest.fixture
def dual_node():
    node = NodeUnderTest(datapath="kernel", extra=DUAL)
    try:
        node.start()
        yield node
    finally:
        node.close()


def test_dual_stack_pods_get_both_families_and_reach_each_other(dual_node):
    node = dual_node
    pods = []
    for version in ("0.3.1", "1.1.0"):
        cid = f"ds{uuid.uuid4().hex[:10]}"
        netns = node.add_pod_netns()
        node.cni_version = version
        rc, res = node.cni("ADD", cid, netns)
        assert rc == 0, (res, node.last_stderr)
        ips = {i["address"]: i for i in res["ips"]}
        v4 = next(a for a in ips if "." in a)
        v6 = next(a for a in ips if ":" in a)
        assert v4.startswith("10.42.7.") and v4.endswith("/32") and ips[v4]["gateway"] == "10.42.7.1"
        assert v6.startswith("fd00:42:0:7::") and v6.endswith("/128") and ips[v6]["gateway"] == "fd00:42:0:7::1"
        if version == "0.3.1":  # 0.x results name the family of each address
            assert {ips[v4]["version"], ips[v6]["version"]} == {"4", "6"}
        else:
            assert all("version" not in i for i in res["ips"])
        assert {(r["dst"], r["gw"]) for r in res["routes"]} == {("0.0.0.0/0", "10.42.7.1"), ("::/0", "fd00:42:0:7::1")}
        assert _addrs(netns) == {"inet": {v4}, "inet6": {v6}}
        _host_end_without_dad(node, cid)
        pods.append((cid, netns, v4.split("/")[0], v6.split("/")[0], res))
    (_, a_ns, _, _, _), (b_cid, b_ns, b4, b6, b_res) = pods
    _ping(a_ns, b4)
    _ping(a_ns, b6)
    st = node.call("status")
    assert st["podCIDRs"] == ["10.42.7.0/24", "fd00:42:0:7::/64"] and st["gateways"] == ["10.42.7.1", "fd00:42:0:7::1"]
    files = {p[2] for p in pods} | {p[3] for p in pods}
    assert files <= _ip_files(node)
    # a restarted agent keeps both addresses of every pod (nothing released, CHECK still passes)
    node.restart("agent")
    node.wait_ready()
    assert files <= _ip_files(node)
    assert node.cni("CHECK", b_cid, b_ns, conf={"prevResult": b_res}) == (0, None), node.last_stderr
    _ping(a_ns, b6)
    for cid, netns, *_ in pods:
        assert node.cni("DEL", cid, netns)[0] == 0
    assert _ip_files(node) == set()


@pytest.mark.long
def test_dual_stack_pods_across_two_nodes_over_an_ipv4_underlay():
    """Two nodes joined by a veth underlay (IPv4), datapath kernel, tunnelProtocol vxlan, dual-stack
    pods with IPv6 primary: routes per family through nvx0, then pings per family."""
    tag = uuid.uuid4().hex[:6]
    cidrs = {"a": "fd00:43:0:1::/64,10.43.1.0/24", "b": "fd00:43:0:2::/64,10.43.2.0/24"}
    ips = {"a": "172.31.251.1", "b": "172.31.251.2"}
    nodes: dict[str, NodeUnderTest] = {}
    try:
        for n in ("a", "b"):
            nodes[n] = NodeUnderTest(datapath="kernel", pod_cidr=cidrs[n],
                                     extra={"clusterCIDR": "fd00:43::/48,10.43.0.0/16", "nodeIP": ips[n], "nodeName": f"n{n}-{tag}"})
        for node in nodes.values():
            sh("ip", "-n", node.ns, "link", "del", "eth0")
        sh("ip", "link", "add", f"nvu{tag}a", "netns", nodes["a"].ns, "type", "veth", "peer", "name", f"nvu{tag}b",
           "netns", nodes["b"].ns)
        for n, node in nodes.items():
            sh("ip", "-n", node.ns, "link", "set", f"nvu{tag}{n}", "name", "eth0")
            sh("ip", "-n", node.ns, "addr", "add", f"{ips[n]}/24", "dev", "eth0")
            sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
        manifests = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{n}-{tag}"},
                      "spec": {"podCIDRs": cidrs[n].split(",")},
                      "status": {"addresses": [{"type": "InternalIP", "address": ips[n]}]}} for n in ("a", "b")]
        pods = {}
        for n, node in nodes.items():
            node.write_manifest("nodes.yaml", manifests)
            node.start()
            netns = node.add_pod_netns()
            rc, res = node.cni("ADD", f"v6{tag}{n}", netns)
            assert rc == 0, (res, node.last_stderr)
            v6, v4 = cidrs[n].split(",")
            assert [i["address"] for i in res["ips"]] == [v6.replace("::/64", "::2/128"), v4.replace(".0/24", ".2/32")]
            assert res["routes"] == [{"dst": "::/0", "gw": v6.replace("::/64", "::1")},
                                     {"dst": "0.0.0.0/0", "gw": v4.replace(".0/24", ".1")}]
            pods[n] = (netns, res["ips"][0]["address"].split("/")[0], res["ips"][1]["address"].split("/")[0])
        # the pod MTU leaves room for the IPv4 underlay's 50 bytes of VXLAN
        assert json.loads(sh("nsenter", f"--net={pods['a'][0]}", "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"] == 1450
        for n, other in (("a", "b"), ("b", "a")):
            for cidr, fam in zip(cidrs[other].split(","), ("-6", "-4"), strict=True):
                r = json.loads(sh("ip", "-n", nodes[n].ns, "-j", fam, "route", "show", cidr).stdout)
                assert r and r[0]["dev"] == "nvx0" and r[0]["encap"] == "ip", r
        lost = [f"{pa[1]} -> {pb[i]}" for pa, pb in ((pods["a"], pods["b"]), (pods["b"], pods["a"])) for i in (1, 2)
                if sh("nsenter", f"--net={pa[0]}", "ping", "-n", "-c", "2", "-W", "3", pb[i], check=False).returncode]
        assert not lost, f"no answer across nodes: {', '.join(lost)}"
        # each nvx0 has a MAC of its own (the receiving driver drops a frame from its own address as
        # a loop), and the remote's next hops resolve to the remote's
        link = json.loads(sh("ip", "-n", nodes["a"].ns, "-j", "link", "show", "nvx0").stdout)[0]
        assert link["address"] == "02:fe:ac:1f:fb:01", link
        neigh = json.loads(sh("ip", "-n", nodes["a"].ns, "-j", "neigh", "show", "dev", "nvx0").stdout)
        assert {n["dst"]: n["lladdr"] for n in neigh if n["dst"] in ("172.31.251.2", "fe80::a9fe:0:ac1f:fb02")} == {
            "172.31.251.2": "02:fe:ac:1f:fb:02", "fe80::a9fe:0:ac1f:fb02": "02:fe:ac:1f:fb:02"}, neigh
    finally:
        for node in nodes.values():
            node.close()

