"""The peers bench/ipv6_throughput.py measures NovaNet against: what the kernel does with no BPF at
all, set up in netns of their own (names start with the caller's prefix). Two of them carry IPv4
as well, as controls: the kernel's own IPv6/IPv4 ratio on the same path, next to NovaNet's.

* :class:`VethRouted6` (same node): two pods on veths into one node netns, the node routing
  between them (IPv6 forwarding, a /128 route per pod to its veth, the pods' default route via a
  link-local gateway on the host veth), as a routed veth CNI does; and the same in IPv4 (a /32
  per pod, the gateway 169.254.1.1 held by each host veth, as Calico's is answered there).
* :class:`CrossNode6` (two nodes joined by a veth underlay carrying IPv4 and IPv6 node addresses,
  a pod per node):
  - ``routed``: no encapsulation, each node routes the other's PodCIDR via its underlay IPv6
    address (the ceiling an overlay is measured against);
  - ``flannel`` / ``flannel-v4u``: what Flannel's vxlan backend programs for IPv6
    (pkg/backend/vxlan in flannel-io/flannel: a ``flannel-v6.<VNI>`` VXLAN device, VNI 1, no
    learning, whose VTEP is the node's IPv6 interface address and which holds the node's lease
    address as a /128; per remote node one route of its IPv6 subnet via that node's lease
    address, onlink on the device, a permanent neighbour entry of that address to the remote
    VTEP MAC and an FDB entry of the MAC to the remote node's public address), with pods on a
    ``cni0`` bridge as the bridge CNI plugin makes them. ``flannel`` is that as flannel does it
    (an IPv6 underlay: outer IPv6, device MTU 1430); ``flannel-v4u`` is the same programming with
    the VTEP on the node's IPv4 address, so that its outer header (IPv4 + UDP + VXLAN, MTU 1450)
    is NovaNet's (IPv6 pods over an IPv4 underlay). ``flannel-v4u`` pods have IPv4 addresses too,
    routed through the same device the way flannel's IPv4 form (``flannel.1``) does it: its lease
    address as a /32, per remote node an onlink route of the remote IPv4 subnet via the remote
    lease address and a permanent ARP entry of it to the remote VTEP MAC. ``flannel.1``'s settings
    are this device's (VNI 1, the IPv4 VTEP, port 4789), and the kernel takes one device per VNI,
    port and socket family, so the IPv4 control runs through this one.
"""

from __future__ import annotations

import json
import subprocess

MODES = ("routed", "flannel", "flannel-v4u")


def sh(*argv: str) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return r.stdout


def ns(name: str, *argv: str) -> str:
    return sh("nsenter", f"--net=/run/netns/{name}", *argv)


def _netns(*names: str) -> None:
    for n in names:
        sh("ip", "netns", "add", n)
        ns(n, "ip", "link", "set", "lo", "up")


def _mtu(netns: str, dev: str) -> int:
    return int(json.loads(ns(netns, "ip", "-j", "link", "show", dev))[0]["mtu"])


def _veth(node: str, host: str, pod: str, mtu: int) -> None:
    """The pod's veth pair: ``host`` in the node netns, ``eth0`` in the pod's."""
    sh(*f"ip link add {host} netns {node} mtu {mtu} type veth peer name eth0 netns {pod} mtu {mtu}".split())


GW4 = "169.254.1.1"  # the IPv4 routed pods' gateway: an address every host veth holds


def _routed_pod(node: str, host: str, pod: str, ip6: str, ip4: str | None = None) -> None:
    """A routed veth pod: its /128, the node's route of it to the veth, the pod's default route via
    a link-local gateway on the host veth; with ``ip4`` the same in IPv4 (its /32, the gateway
    on the host veth, which the node's ARP answers)."""
    ns(node, "ip", "addr", "add", "fe80::1/64", "dev", host, "nodad")
    ns(node, "ip", "link", "set", host, "up")
    ns(node, "ip", "-6", "route", "add", f"{ip6}/128", "dev", host)
    ns(pod, "ip", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
    ns(pod, "ip", "link", "set", "eth0", "up")
    ns(pod, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    if ip4:
        ns(node, "ip", "addr", "add", f"{GW4}/32", "dev", host)
        ns(node, "ip", "route", "add", f"{ip4}/32", "dev", host)
        ns(pod, "ip", "addr", "add", f"{ip4}/32", "dev", "eth0")
        ns(pod, "ip", "route", "add", GW4, "dev", "eth0", "scope", "link")
        ns(pod, "ip", "route", "add", "default", "via", GW4, "dev", "eth0")


class _Peer:
    pods: dict[str, str]
    made: list[str]

    def netns(self, pod: str) -> str:
        return f"/run/netns/{self.pods[pod]}"

    def down(self) -> None:
        for n in reversed(self.made):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


class VethRouted6(_Peer):
    """Two pods ``a`` (client) and ``b`` (server) routed by one node's kernel over IPv6 and IPv4."""

    def __init__(self, prefix: str, mtu: int):
        self.node, self.pods, self.mtu = f"{prefix}n", {"a": f"{prefix}a", "b": f"{prefix}b"}, mtu
        self.ip6 = {"a": "fd00:45::a", "b": "fd00:45::b"}
        self.ip4 = {"a": "10.45.0.10", "b": "10.45.0.11"}
        self.made: list[str] = []

    def up(self) -> None:
        self.made = [self.node, *self.pods.values()]
        _netns(*self.made)
        ns(self.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1")
        for p, pod in self.pods.items():
            _veth(self.node, f"h{p}", pod, self.mtu)
            _routed_pod(self.node, f"h{p}", pod, self.ip6[p], self.ip4[p])


class CrossNode6(_Peer):
    """Pod ``a`` on node 1 (client), pod ``b`` on node 2 (server), joined as ``mode`` says."""

    def __init__(self, prefix: str, mode: str):
        if mode not in MODES:
            raise ValueError(f"mode: one of {MODES}, not {mode!r}")
        self.p, self.mode = prefix, mode
        self.nodes = [f"{prefix}n1", f"{prefix}n2"]
        self.pods = {"a": f"{prefix}a", "b": f"{prefix}b"}
        self.node4 = ["172.31.248.1", "172.31.248.2"]
        self.node6 = ["fd00:31:248::1", "fd00:31:248::2"]
        self.subnet = ["fd00:46:0:1::", "fd00:46:0:2::"]  # each node's IPv6 PodCIDR (/64)
        self.ip6 = {"a": "fd00:46:0:1::2", "b": "fd00:46:0:2::2"}
        # flannel-v4u only: each node's IPv4 subnet (/24) and pod address
        self.subnet4 = ["10.46.1.", "10.46.2."]
        self.ip4 = {"a": "10.46.1.2", "b": "10.46.2.2"} if mode == "flannel-v4u" else {}
        self.made: list[str] = []

    def up(self) -> None:
        self.made = [*self.nodes, *self.pods.values()]
        _netns(*self.made)
        n1, n2 = self.nodes
        sh(*f"ip link add eth0 netns {n1} type veth peer name eth0 netns {n2}".split())
        for i, n in enumerate(self.nodes):
            ns(n, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1")
            ns(n, "ip", "addr", "add", f"{self.node4[i]}/24", "dev", "eth0")
            ns(n, "ip", "addr", "add", f"{self.node6[i]}/64", "dev", "eth0", "nodad")
            ns(n, "ip", "link", "set", "eth0", "up")
        mtu = self._tunnel() if self.mode != "routed" else 1500
        for i, (p, pod) in enumerate(self.pods.items()):
            self._pod(i, p, pod, mtu)

    def _tunnel(self) -> int:
        """flannel-v6.1 on each node and the remote node's route, neighbour and FDB entries; the
        device's MTU (the kernel's: the underlay's less the encapsulation)."""
        v4u = self.mode == "flannel-v4u"
        vtep = self.node4 if v4u else self.node6
        mac = ["02:f6:00:00:01:01", "02:f6:00:00:02:01"]
        for i, n in enumerate(self.nodes):
            j = 1 - i
            dev = f"flannel-v6.1 address {mac[i]} type vxlan id 1 local {vtep[i]} dev eth0 dstport 4789 nolearning"
            ns(n, "ip", "link", "add", *dev.split())
            ns(n, "ip", "addr", "add", f"{self.subnet[i]}/128", "dev", "flannel-v6.1", "nodad")
            ns(n, "ip", "link", "set", "flannel-v6.1", "up")
            ns(n, *f"ip -6 neigh add {self.subnet[j]} lladdr {mac[j]} dev flannel-v6.1 nud permanent".split())
            ns(n, "bridge", "fdb", "append", mac[j], "dev", "flannel-v6.1", "dst", vtep[j])
            ns(
                n,
                *f"ip -6 route add {self.subnet[j]}/64 via {self.subnet[j]} dev flannel-v6.1 onlink".split(),
            )
            if self.ip4:  # flannel.1's programming (module docstring), on this device
                lease, remote = f"{self.subnet4[i]}0", f"{self.subnet4[j]}0"
                ns(n, "ip", "addr", "add", f"{lease}/32", "dev", "flannel-v6.1")
                ns(n, *f"ip neigh add {remote} lladdr {mac[j]} dev flannel-v6.1 nud permanent".split())
                ns(n, *f"ip route add {remote}/24 via {remote} dev flannel-v6.1 onlink".split())
        return _mtu(self.nodes[0], "flannel-v6.1")

    def _pod(self, i: int, p: str, pod: str, mtu: int) -> None:
        node = self.nodes[i]
        _veth(node, f"h{p}", pod, mtu)
        if self.mode == "routed":  # a routed veth pod, the remote PodCIDR via the other node
            _routed_pod(node, f"h{p}", pod, self.ip6[p])
            remote = f"{self.subnet[1 - i]}/64"
            ns(node, "ip", "-6", "route", "add", remote, "via", self.node6[1 - i], "dev", "eth0")
            return
        ns(pod, "ip", "addr", "add", f"{self.ip6[p]}/64", "dev", "eth0", "nodad")
        ns(pod, "ip", "link", "set", "eth0", "up")
        # the bridge CNI plugin: cni0 holds the subnet's gateway, the pod's veth enslaved to it
        gw = f"{self.subnet[i]}1"
        ns(node, "ip", "link", "add", "cni0", "mtu", str(mtu), "type", "bridge")
        ns(node, "ip", "addr", "add", f"{gw}/64", "dev", "cni0", "nodad")
        ns(node, "ip", "link", "set", "cni0", "up")
        ns(node, "ip", "link", "set", f"h{p}", "master", "cni0", "up")
        ns(pod, "ip", "-6", "route", "add", "default", "via", gw, "dev", "eth0")
        if self.ip4:
            gw4 = f"{self.subnet4[i]}1"
            ns(node, "ip", "addr", "add", f"{gw4}/24", "dev", "cni0")
            ns(pod, "ip", "addr", "add", f"{self.ip4[p]}/24", "dev", "eth0")
            ns(pod, "ip", "route", "add", "default", "via", gw4, "dev", "eth0")
