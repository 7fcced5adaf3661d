"""IPv6 pods across two nodes through the eBPF datapath and a tunnel plugin's BPF programs, over an
IPv4 underlay and over an IPv6-only one: two node netns joined by a veth, dual-stack pods,
datapath ebpf with tunnelProtocol vxlan or geneve. Proves ping and ping6 both ways, full-size TCP
streams over both inner families both ways, that the wire carries them encapsulated (tshark on the
underlay: outer IPv4 or IPv6 + UDP to the tunnel port, the pods' addresses inside), the pod MTU
of the underlay family, that the packets went through the tunnel programs and the v6 to-pod path
(their counters and the receiver's flow table), and that an unknown address of the cluster's IPv6
range is dropped NO_ROUTE at the sender."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.overlay.dual_stack_nodes import TwoNodes
from tests.overlay.helpers import Capture, wait_for
from tests.support.node import sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf, pytest.mark.slow]

PORT = {"vxlan": 4789, "geneve": 6081}
# per underlay family: the outer IPv6 header is 20 bytes longer than IPv4's
OVERHEAD = {("vxlan", 4): 50, ("geneve", 4): 58, ("vxlan", 6): 70, ("geneve", 6): 78}
STREAM = 4 << 20  # bytes echoed back over one IPv6 TCP connection: many full-size (GSO) segments


# make test: Geneve over the IPv6 underlay (the most BPF of its own); the other cells are long
@pytest.fixture(
    params=[
        pytest.param(("vxlan", 4), marks=pytest.mark.long, id="vxlan-ipv4"),
        pytest.param(("geneve", 4), marks=pytest.mark.long, id="geneve-ipv4"),
        pytest.param(("vxlan", 6), marks=pytest.mark.long, id="vxlan-ipv6"),
        pytest.param(("geneve", 6), id="geneve-ipv6"),
    ]
)
def two(request: pytest.FixtureRequest) -> Iterator[TwoNodes]:
    protocol, family = request.param
    t = TwoNodes(protocol, prefix="vx" if family == 4 else "u6", family=family)
    try:
        t.up()
        yield t
    finally:
        t.down()


_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    c.sendall(b)
c.close()
"""

_CLIENT = """
import hashlib, os, socket, sys, threading
data = os.urandom(int(sys.argv[2]))
s = socket.create_connection((sys.argv[1], 8080), timeout=20)
t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
t.start()
got = bytearray()
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    got += b
t.join()
print(len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), flush=True)
"""


def _tcp_echo(two: TwoNodes, client: str, server: str, family: int) -> str:
    srv = subprocess.Popen(
        ["nsenter", f"--net={two.pods[server].netns}", sys.executable, "-c", _ECHO_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "listening", srv.stderr
        ip = two.pods[server].ip6 if family == 6 else two.pods[server].ip4  # the server takes both
        out = two.in_pod(client, sys.executable, "-c", _CLIENT, ip, str(STREAM))
        return out.stdout.strip() or out.stderr[-2000:]
    finally:
        srv.kill()
        srv.communicate()


def _capture_one_ping(two: TwoNodes, src: str, dst_ip: str) -> list[dict[str, str]]:
    """tshark on the receiver's underlay while ``src`` pings ``dst_ip`` once: the echo request and
    reply, decoded (outer and inner header fields of one family come comma-separated)."""
    fields = [
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "udp.dstport",
        "udp.checksum",
        "icmp.type",
        "icmpv6.type",
    ]
    cap = Capture(two, "b", f"udp port {PORT[two.protocol]}", fields, count=2)  # type: ignore[arg-type]
    try:
        # the first echo may wait for neighbour discovery in the pod; the capture takes 2 packets
        p = two.in_pod(src, "ping", "-n", "-c", "1", "-W", "5", dst_ip)
        assert p.returncode == 0, p.stdout + p.stderr
        rows = cap.rows()
    finally:
        cap.stop()
    assert len(rows) == 2, cap.startup
    return rows


def _outer_inner(row: dict[str, str], outer: int, inner: int) -> tuple[str, str, str, str]:
    """(outer src, outer dst, inner src, inner dst) of a captured tunnel packet."""
    o = "ip" if outer == 4 else "ipv6"
    i = "ip" if inner == 4 else "ipv6"
    return (
        row[f"{o}.src"].split(",")[0],
        row[f"{o}.dst"].split(",")[0],
        row[f"{i}.src"].split(",")[-1],
        row[f"{i}.dst"].split(",")[-1],
    )


def _software_segmentation(two: TwoNodes) -> None:
    """The GSO skbs VXLAN's encap program builds over an IPv6 underlay (one SKB_GSO_UDP_TUNNEL skb,
    outer headers pushed in BPF): with tunnel segmentation offload off on the sender's underlay the
    kernel cuts them into full-size outer packets whose inner TCP checksums are right, and the
    receiver's nvx0 takes them (the stream's digest)."""
    na = two.node_netns("a")
    off = ["tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation", "off", "tx", "off"]
    sh("nsenter", f"--net={na}", "ethtool", "-K", "eth0", *off)
    fields = ["frame.len", "tcp.checksum.status", "tcp.len", "udp.checksum"]
    cap = Capture(
        two,  # type: ignore[arg-type]
        "b",
        f"udp port 4789 and src host {two.ips['a']}",
        fields,
        count=200,
        extra=["-o", "tcp.check_checksum:TRUE"],
    )
    try:
        assert _tcp_echo(two, "a", "b", 6) == f"{STREAM} True"
        rows = cap.rows()
    finally:
        cap.stop()
        sh("nsenter", f"--net={na}", "ethtool", "-K", "eth0", *(w.replace("off", "on") for w in off))
    data = [r for r in rows if r.get("tcp.len") and int(r["tcp.len"].split(",")[-1]) > 0]
    assert len(data) > 50, cap.startup
    assert max(int(r["frame.len"]) for r in data) <= 1514  # 1500-byte outer IPv6 packets at most
    assert sum(1 for r in data if int(r["frame.len"]) == 1514) > len(data) // 2  # full-size segments
    assert {r["tcp.checksum.status"] for r in data} == {"1"}  # tshark: 1 good (0 bad, 2 unverified)
    assert {r["udp.checksum"] for r in data} == {"0x0000"}


def test_ipv6_pods_reach_each_other_across_nodes_through_the_tunnel(two: TwoNodes) -> None:
    a, b = two.pods["a"], two.pods["b"]
    mtu = json.loads(sh("nsenter", f"--net={a.netns}", "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"]
    assert mtu == 1500 - OVERHEAD[(two.protocol, two.family)]  # the underlay family's overhead
    ips, fam = two.ips, two.family
    for inner, (sa, da) in ((6, (a.ip6, b.ip6)), (4, (a.ip4, b.ip4))):
        req, rep = _capture_one_ping(two, "a", da)
        # outer headers of the underlay family between the nodes, UDP to the tunnel port, the
        # pods' packet inside
        assert _outer_inner(req, fam, inner) == (ips["a"], ips["b"], sa, da), req
        assert _outer_inner(rep, fam, inner) == (ips["b"], ips["a"], da, sa), rep
        assert req["udp.dstport"] == str(PORT[two.protocol]), req
        icmp = "icmpv6.type" if inner == 6 else "icmp.type"
        assert (req[icmp], rep[icmp]) == (("128", "129") if inner == 6 else ("8", "0"))
        if fam == 6:
            # over IPv6 both encap programs push the outer headers themselves and send a zero UDP
            # checksum (RFC 6935/6936: segments of a GSO skb made so could carry none), which the
            # receiver (VXLAN: nvx0 with udp6zerocsumrx) accepted: the reply came back
            assert (req["udp.checksum"], rep["udp.checksum"]) == ("0x0000", "0x0000"), (req, rep)

    for src, dst in (("a", b), ("b", a)):
        for ip in (dst.ip6, dst.ip4):  # both families, both ways
            p = two.in_pod(src, "ping", "-n", "-c", "1", "-W", "3", ip)
            assert p.returncode == 0, f"{src} -> {ip}: {p.stdout}{p.stderr}"
    for family in (6, 4):  # both inner families, both ways
        assert _tcp_echo(two, "a", "b", family) == f"{STREAM} True", family
        assert _tcp_echo(two, "b", "a", family) == f"{STREAM} True", family

    if (two.protocol, fam) == ("vxlan", 6):
        _software_segmentation(two)

    # each side encapsulated and decapsulated through its tunnel programs, GSO skbs included
    for n in ("a", "b"):
        c = two.nodes[n].call(f"{two.protocol}.status")["counters"]
        assert c["encap"] > 0 and c["decap"] + c["decap_gso"] > 0, c
        assert c["encap_gso"] > 0, c  # the 4 MiB stream left in GSO skbs, not packet by packet
    # the receiver decided the cross-node IPv6 flows on its to-pod path, with a's identity
    ident_a = {e["ip"]: e["identity"] for e in two.dataplane("a", "ebpf.endpoints")}[a.ip6]
    events = two.flows("b")
    assert any(
        e["src_ip"] == a.ip6
        and e["dst_ip"] == b.ip6
        and e["hook"] == "to_pod"
        and e["verdict"] == "ALLOW"
        and e["src_identity"] == ident_a
        for e in events
    ), events[-20:]

    # an address of the cluster's IPv6 range that no pod holds: dropped at the sender, NO_ROUTE
    def no_route() -> int:
        return int(two.dataplane("a", "ebpf.drops")["drops"].get("NO_ROUTE", 0))

    before = no_route()
    two.in_pod("a", "ping", "-6", "-n", "-c", "1", "-W", "1", "fd00:44:0:2::7777")
    assert wait_for(lambda: no_route() > before, timeout=10)

    # a pod MTU raised by hand past the tunnel's: a DF packet (every IPv6 one) too big to
    # encapsulate goes to the node's stack where a route of its family through the tunnel carries
    # the tunnel MTU, which answers Packet Too Big / frag-needed with it; where there is no such
    # route (Geneve: the other family than the underlay's) it is dropped MTU_EXCEEDED, never sent
    # unencapsulated
    tunnel_mtu = 1500 - OVERHEAD[(two.protocol, two.family)]
    # a Kubernetes node forwards (the kubelet requires it); the node netns starts without
    sh(
        "nsenter",
        f"--net={two.node_netns('a')}",
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
    )
    host_if = {e["ip"]: e["host_ifname"] for e in two.dataplane("a", "ebpf.endpoints")}[a.ip4]
    sh(
        "ip", "-n", two.nodes["a"].ns, "link", "set", host_if, "mtu", "1500"
    )  # a veth drops what its peer's MTU cannot take
    sh("nsenter", f"--net={a.netns}", "ip", "link", "set", "eth0", "mtu", "1500")

    def exceeded() -> int:
        return int(two.dataplane("a", "ebpf.drops")["drops"].get("MTU_EXCEEDED", 0))

    for inner, ip, size in ((6, b.ip6, 1452), (4, b.ip4, 1472)):  # 1500-byte packets
        before = exceeded()
        answered = two.protocol == "vxlan" or inner == two.family
        # an answer comes at once; a drop is seen in the counter, not by waiting out a timeout
        wait = "3" if answered else "1"
        p = two.in_pod("a", "ping", "-n", "-c", "1", "-W", wait, "-M", "do", "-s", str(size), ip)
        if answered:
            want = f"mtu={tunnel_mtu}" if inner == 6 else f"mtu = {tunnel_mtu}"
            assert want in p.stdout, (inner, p.stdout, p.stderr)
        else:
            assert p.returncode != 0 and wait_for(lambda b=before: exceeded() > b, timeout=10), (
                inner,
                p.stdout,
            )
