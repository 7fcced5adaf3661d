"""A node netns with pod netns attached by veths, configured the way the agent does for
datapath=ebpf: pod IP/32, route to the gateway scope link, default via the gateway; no
neighbour entries, no proxy-ARP, no per-pod routes, ``net.ipv4.ip_forward=0`` on the node."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from novanet_core.types import Endpoint


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Pod:
    name: str
    ns: str
    ip: str
    host_if: str
    identity: int
    mac: str = ""
    host_mac: str = ""

    def endpoint(self, gateway: str) -> Endpoint:
        return Endpoint(container_id=self.name * 4, ifname="eth0", namespace="default", pod=self.name,
                        netns=f"/run/netns/{self.ns}", ip=self.ip, mac=self.mac, host_ifname=self.host_if,
                        host_ifindex=0, host_mac=self.host_mac, gateway=gateway, mtu=1500,
                        identity=self.identity)

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run_in_cgroup(self, cgroup: str, *argv: str, check: bool = True,
                      timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """As ``run``, with the process inside ``cgroup`` (the node's: socket-level translation)."""
        from tests.support import cgroups

        return sh(*cgroups.argv_in(cgroup, ["nsenter", f"--net=/run/netns/{self.ns}", *argv]), check=check,
                  timeout=timeout)


def _mac(ns: str, ifname: str) -> str:
    out = sh("ip", "-n", ns, "-o", "link", "show", ifname).stdout
    m = re.search(r"link/ether ([0-9a-f:]{17})", out)
    assert m, out
    return m.group(1)


@dataclass
class Topology:
    uid: str = field(default_factory=lambda: f"{os.getpid() % 10000:04d}{uuid.uuid4().hex[:4]}")
    pod_cidr: str = "10.42.0.0/24"
    gateway: str = "10.42.0.1"
    node_ip: str = "172.31.251.1"
    pods: dict[str, Pod] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return f"nvbn{self.uid}"

    @property
    def bpf_root(self) -> str:
        return f"/sys/fs/bpf/novanet-test-{self.uid}"

    @property
    def cgroup(self) -> str:
        """The node's cgroup: socket-level Service translation applies to processes in it."""
        from tests.support import cgroups

        return f"{cgroups.root()}/novanet-test-{self.uid}"

    def create(self, n_pods: int = 3) -> Topology:
        os.makedirs(self.cgroup, exist_ok=True)
        sh("ip", "netns", "add", self.node)
        sh("ip", "-n", self.node, "link", "set", "lo", "up")
        sh("ip", "-n", self.node, "addr", "add", f"{self.node_ip}/32", "dev", "lo")
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        for i in range(n_pods):
            self.add_pod(chr(ord("a") + i), f"10.42.0.{10 + i}", 1000 + i)
        return self

    def add_pod(self, name: str, ip: str, identity: int) -> Pod:
        ns, host_if = f"nvbp{self.uid}{name}", f"nv{self.uid}{name}"
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", host_if, "netns", self.node, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.node, "link", "set", host_if, "up")
        sh("ip", "-n", ns, "route", "add", self.gateway, "dev", "eth0", "scope", "link")
        sh("ip", "-n", ns, "route", "add", "default", "via", self.gateway, "dev", "eth0")
        pod = Pod(name, ns, ip, host_if, identity, _mac(ns, "eth0"), _mac(self.node, host_if))
        self.pods[name] = pod
        return pod

    def destroy(self) -> None:
        for p in self.pods.values():
            sh("ip", "netns", "del", p.ns, check=False)
        sh("ip", "netns", "del", self.node, check=False)
        from novanet_core.bpf import bpffs
        from tests.support import cgroups

        bpffs.remove_tree(self.bpf_root)
        cgroups.remove(self.cgroup)

    def config(self, **bpf: str) -> dict[str, object]:
        return {"nodeIP": self.node_ip, "clusterCIDR": "10.42.0.0/16", "podCIDR": self.pod_cidr,
                "bpf": {"root": self.bpf_root, "headerTree": "/tmp/novanet-ktree", "cgroupRoot": self.cgroup, **bpf}}

    def settings(self, default_deny: bool = False) -> dict[str, object]:
        return {"nodeIP": self.node_ip, "podCIDR": self.pod_cidr, "clusterCIDR": "10.42.0.0/16",
                "gateway": self.gateway, "routingMode": "overlay", "tunnelProtocol": "vxlan",
                "serviceCIDR": "10.96.0.0/12",
                "defaultDeny": default_deny, "mtu": 1500}


def wait_for(cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``cond`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def ping(src: Pod, dst_ip: str, count: int = 3, interval: float = 0.2, deadline: float = 10) -> tuple[int, int]:
    """(transmitted, received). With ``-w`` ping keeps sending until ``count`` replies are in, so
    a working path shows as received == count (a retransmit after a slow reply adds to
    transmitted); a blocked one as received == 0 at the deadline."""
    r = src.run("ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", "-w", str(deadline),
                dst_ip, check=False, timeout=deadline + 30)
    return parse_ping(r.stdout)


def parse_ping(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))
