"""Two NovaNet nodes with dual-stack pods through the eBPF datapath and a tunnel plugin's BPF
programs (an IPv4 or an IPv6-only underlay, IPv6 and IPv4 inner): two node netns joined by a veth, datapath ebpf with
tunnelProtocol vxlan or geneve, pods added through the CNI, and what the API server would tell
every agent (the nodes, each pod with its node and both its addresses) as manifests.

Used by tests/overlay/test_ipv6_cross_node.py (a pod on each node) and by
bench/ipv6_throughput.py (a second pod on the first node, for same-node traffic beside it)."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

from novanet_core.api.client import ApiClient
from tests.overlay.helpers import wait_for
from tests.support.node import NodeUnderTest, sh

CLUSTER = "10.44.0.0/16,fd00:44::/48"
CIDRS = {"a": "10.44.1.0/24,fd00:44:0:1::/64", "b": "10.44.2.0/24,fd00:44:0:2::/64"}
IPS = {"a": "172.31.249.1", "b": "172.31.249.2"}
# the node addresses and prefix length per underlay family
UNDERLAY = {4: (IPS, 24), 6: ({"a": "fd00:31:249::1", "b": "fd00:31:249::2"}, 64)}


@dataclass
class Pod:
    netns: str
    ip4: str
    ip6: str


class TwoNodes:
    """The two nodes ``a`` and ``b`` and the pods ``placement`` names (pod -> node; default a pod
    of the node's name on each); ``node_netns`` lets the overlay Capture helper use it. Names
    start with ``prefix`` and a random tag. ``family``: the underlay's (the nodes' only address)."""

    def __init__(
        self, protocol: str, prefix: str = "vx", placement: dict[str, str] | None = None, family: int = 4
    ):
        self.protocol = protocol
        self.prefix = prefix
        self.family = family
        self.ips, self.plen = UNDERLAY[family]
        self.placement = placement or {"a": "a", "b": "b"}
        self.tag = uuid.uuid4().hex[:6]
        self.nodes: dict[str, NodeUnderTest] = {}
        self.pods: dict[str, Pod] = {}

    def node_name(self, n: str) -> str:
        return f"{self.prefix}{n}-{self.tag}"

    def node_netns(self, name: str) -> str:
        return f"/run/netns/{self.nodes[name].ns}"

    def up(self) -> None:
        for n in ("a", "b"):
            self.nodes[n] = NodeUnderTest(
                datapath="ebpf",
                pod_cidr=CIDRS[n],
                prefix=self.prefix,
                extra={
                    "clusterCIDR": CLUSTER,
                    "nodeIP": self.ips[n],
                    "nodeName": self.node_name(n),
                    "routingMode": "overlay",
                    "tunnelProtocol": self.protocol,
                },
            )
        for node in self.nodes.values():
            sh("ip", "-n", node.ns, "link", "del", "eth0")
        a, b = f"{self.prefix}u{self.tag}a", f"{self.prefix}u{self.tag}b"
        sh(
            "ip",
            "link",
            "add",
            a,
            "netns",
            self.nodes["a"].ns,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            self.nodes["b"].ns,
        )
        manifests = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.node_name(n)},
                "spec": {"podCIDRs": CIDRS[n].split(",")},
                "status": {"addresses": [{"type": "InternalIP", "address": self.ips[n]}]},
            }
            for n in ("a", "b")
        ]
        for n, node in self.nodes.items():
            sh("ip", "-n", node.ns, "link", "set", f"{self.prefix}u{self.tag}{n}", "name", "eth0")
            nodad = ["nodad"] if self.family == 6 else []  # no duplicate address detection to wait for
            sh("ip", "-n", node.ns, "addr", "add", f"{self.ips[n]}/{self.plen}", "dev", "eth0", *nodad)
            sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
            node.write_manifest("nodes.yaml", manifests)
        # both nodes compile their programs at once (the slow part of a node's start)
        for node in self.nodes.values():
            node._spawn("dataplane")
            node._spawn("agent")
        for node in self.nodes.values():
            node.wait_ready()
        for p, n in self.placement.items():
            node = self.nodes[n]
            netns = node.add_pod_netns()
            rc, res = node.cni(
                "ADD",
                f"{p}-{self.prefix}{self.tag}",  # host veth names come from the first 11 characters
                netns,
                args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{p}",
            )
            if rc != 0:
                raise RuntimeError(f"CNI ADD of pod {p} on node {n} failed: {res} {node.last_stderr}")
            addrs = [i["address"].split("/")[0] for i in res["ips"]]
            self.pods[p] = Pod(netns, next(a for a in addrs if "." in a), next(a for a in addrs if ":" in a))
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{p}", "namespace": "default", "labels": {"app": f"p{p}"}},
                "spec": {"nodeName": self.node_name(self.placement[p]), "containers": [{"name": "c"}]},
                "status": {
                    "phase": "Running",
                    "podIP": pod.ip4,
                    "podIPs": [{"ip": pod.ip4}, {"ip": pod.ip6}],
                    "hostIP": self.ips[self.placement[p]],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            for p, pod in self.pods.items()
        ]
        for node in self.nodes.values():
            node.write_manifest("pods.yaml", pods)
        for n, other in (("a", "b"), ("b", "a")):
            want = {
                ip for p, pod in self.pods.items() if self.placement[p] == other for ip in (pod.ip4, pod.ip6)
            }
            if not wait_for(
                lambda n=n, want=want: (
                    want <= {e["ip"] for e in self.dataplane(n, "ebpf.endpoints") if not e["local"]}
                ),
                timeout=30,
            ):
                raise TimeoutError(f"{n} never learnt {want}")
            # and has the tunnel to the other node (before it, the datapath drops NO_TUNNEL)
            if not wait_for(
                lambda n=n, other=other: (
                    [r["node"] for r in self.nodes[n].call(f"{self.protocol}.status")["tunnels"]]
                    == [self.node_name(other)]
                ),
                timeout=30,
            ):
                raise TimeoutError(f"{n} has no tunnel to {other}: {self.nodes[n].log('agent')}")

    def down(self) -> None:
        for node in self.nodes.values():
            node.close()

    def in_pod(self, n: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return sh("nsenter", f"--net={self.pods[n].netns}", *argv, check=check)

    def dataplane(self, n: str, method: str) -> Any:
        with ApiClient(self.nodes[n].config["sockets"]["dataplane"], timeout=30) as c:
            return c.call(method)

    def flows(self, n: str) -> list[dict[str, Any]]:
        with ApiClient(self.nodes[n].config["sockets"]["dataplane"], timeout=30) as c:
            return list(c.stream("ebpf.flows", {"limit": 4096}))
