"""tests/bpf/topo.py's node netns with dual-stack pods: an IPv6 address per pod (``/128``,
without duplicate address detection), a link route to the IPv6 gateway and a default route via
it, the node's IPv6 address on its loopback, IPv6 forwarding off on the node. Names of its own
(``v619…``), so that it never meets another topology."""

from __future__ import annotations

from dataclasses import dataclass

from novanet_core.types import Endpoint
from tests.bpf.topo import Pod, Topology, _mac, sh

GW6 = "fd00:42::1"
NODE_IP6 = "fd00:31:251::1"


@dataclass
class Pod6(Pod):
    ip6: str = ""

    def endpoint(self, gateway: str) -> Endpoint:
        ep = super().endpoint(gateway)
        ep.ips, ep.gateways = [self.ip, self.ip6], [gateway, GW6]
        return ep


class DualStackTopology(Topology):
    """tests/bpf/topo.py's topology with an IPv6 address per pod (names of their own, starting
    with ``prefix``: a subclass with another prefix never meets this one's)."""

    prefix = "v619"

    @property
    def node(self) -> str:
        return f"{self.prefix}n{self.uid}"

    @property
    def bpf_root(self) -> str:
        return f"/sys/fs/bpf/{self.prefix}-{self.uid}"

    @property
    def cgroup(self) -> str:
        from tests.support import cgroups

        return f"{cgroups.root()}/{self.prefix}-{self.uid}"

    def create(self, n_pods: int = 3) -> DualStackTopology:
        super().create(n_pods)
        sh("ip", "-n", self.node, "addr", "add", f"{NODE_IP6}/128", "dev", "lo")
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
        return self

    def add_pod(self, name: str, ip: str, identity: int) -> Pod:
        ns, host_if = f"{self.prefix}p{self.uid}{name}", f"{self.prefix}{self.uid}{name}"
        ip6 = f"fd00:42::{10 + ord(name) - ord('a'):x}"
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", host_if, "netns", self.node, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.node, "link", "set", host_if, "up")
        for fam, gw in (("-4", self.gateway), ("-6", GW6)):
            sh("ip", fam, "-n", ns, "route", "add", gw, "dev", "eth0", "scope", "link")
            sh("ip", fam, "-n", ns, "route", "add", "default", "via", gw, "dev", "eth0")
        pod = Pod6(name, ns, ip, host_if, identity, _mac(ns, "eth0"), _mac(self.node, host_if), ip6=ip6)
        self.pods[name] = pod
        return pod

    def settings(self, default_deny: bool = False) -> dict[str, object]:
        s = super().settings(default_deny)
        s.update(nodeIPs=[self.node_ip, NODE_IP6], gateways=[self.gateway, GW6])
        return s
