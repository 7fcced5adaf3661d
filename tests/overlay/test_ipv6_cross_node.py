"""IPv6 pods across two nodes through the eBPF datapath and a tunnel plugin's BPF programs (IPv4
underlay, IPv6 inner): two node netns joined by a veth, dual-stack pods, datapath ebpf with
tunnelProtocol vxlan or geneve. Proves ping6 and a full-size TCP stream over IPv6 both ways, that
the wire carries them encapsulated (tshark on the underlay: outer IPv4 + UDP to the tunnel port,
inner IPv6), that the packets went through the tunnel programs and the v6 to-pod path (their
counters and the receiver's flow table), and that an unknown address of the cluster's IPv6 range
is dropped NO_ROUTE at the sender."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.overlay.dual_stack_nodes import IPS, TwoNodes
from tests.overlay.helpers import Capture, wait_for
from tests.support.node import sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf, pytest.mark.slow]

PORT = {"vxlan": 4789, "geneve": 6081}
OVERHEAD = {"vxlan": 50, "geneve": 58}
STREAM = 4 << 20  # bytes echoed back over one IPv6 TCP connection: many full-size (GSO) segments


@pytest.fixture(params=["vxlan", pytest.param("geneve", marks=pytest.mark.long)])
def two(request: pytest.FixtureRequest) -> Iterator[TwoNodes]:
    t = TwoNodes(request.param)
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


def _tcp6_echo(two: TwoNodes, client: str, server: str) -> str:
    srv = subprocess.Popen(
        ["nsenter", f"--net={two.pods[server].netns}", sys.executable, "-c", _ECHO_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "listening", srv.stderr
        out = two.in_pod(client, sys.executable, "-c", _CLIENT, two.pods[server].ip6, str(STREAM))
        return out.stdout.strip() or out.stderr[-2000:]
    finally:
        srv.kill()
        srv.communicate()


def test_ipv6_pods_reach_each_other_across_nodes_through_the_tunnel(two: TwoNodes) -> None:
    a, b = two.pods["a"], two.pods["b"]
    mtu = json.loads(sh("nsenter", f"--net={a.netns}", "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"]
    assert mtu == 1500 - OVERHEAD[two.protocol]  # IPv4 underlay: the protocol's IPv4 overhead
    fields = ["ip.src", "ip.dst", "udp.dstport", "ipv6.src", "ipv6.dst", "icmpv6.type"]
    cap = Capture(two, "b", f"udp port {PORT[two.protocol]}", fields, count=2)  # type: ignore[arg-type]
    try:
        # the first echo may wait for neighbour discovery in the pod; the capture takes 2 packets
        p = two.in_pod("a", "ping", "-6", "-n", "-c", "1", "-W", "5", b.ip6)
        assert p.returncode == 0, p.stdout + p.stderr
        rows = cap.rows()
    finally:
        cap.stop()
    assert len(rows) == 2, cap.startup
    req, rep = rows
    # outer IPv4 between the nodes, UDP to the tunnel port, the pods' IPv6 packet inside
    assert (req["ip.src"], req["ip.dst"], req["udp.dstport"]) == (IPS["a"], IPS["b"], str(PORT[two.protocol]))
    assert (req["ipv6.src"], req["ipv6.dst"], req["icmpv6.type"]) == (a.ip6, b.ip6, "128")
    assert (rep["ip.src"], rep["ip.dst"], rep["ipv6.src"], rep["ipv6.dst"], rep["icmpv6.type"]) == (
        IPS["b"],
        IPS["a"],
        b.ip6,
        a.ip6,
        "129",
    )

    for src, dst in (("a", b), ("b", a)):
        for ip in (dst.ip6, dst.ip4):  # both families, both ways
            p = two.in_pod(src, "ping", "-n", "-c", "2", "-W", "3", ip)
            assert p.returncode == 0, f"{src} -> {ip}: {p.stdout}{p.stderr}"
    assert _tcp6_echo(two, "a", "b") == f"{STREAM} True"
    assert _tcp6_echo(two, "b", "a") == f"{STREAM} True"

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
