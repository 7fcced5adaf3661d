"""A pod cannot take another pod's identity by sending with that pod's address.

The from-pod program looks up the source address in the endpoints map for the sender's
identity; a pod that put another pod's address on its eth0 used to get that pod's identity (and
its allow rules). The entry must also belong to the veth the packet came in on: otherwise the
packet is dropped as NO_IDENTITY. Checked for a local pod's address and for a remote pod's (an
entry with no veth), with a policy that denies the sender and allows the pod it impersonates.
"""

from __future__ import annotations

import time

import pytest

from novanet_core.types import RemoteEndpoint
from tests.bpf.topo import Pod, Topology, ping

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


def _in_echos(p: Pod) -> int:
    snmp = p.run("cat", "/proc/net/snmp").stdout
    header, values = [line.split() for line in snmp.splitlines() if line.startswith("Icmp:")][:2]
    return int(values[header.index("InEchos")])


def test_pod_cannot_send_as_another_pod(topo: Topology, datapath) -> None:
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    remote_ip = "10.42.5.7"
    datapath.upsert_remote(RemoteEndpoint(ip=remote_ip, identity=a.identity, node_ip="172.31.251.9"))
    datapath.upsert_policy({"src_identity": c.identity, "dst_identity": b.identity, "protocol": 1, "action": "deny"})
    assert ping(a, b.ip, count=1)[1] == 1  # a is allowed to b
    assert ping(c, b.ip, count=1, deadline=2)[1] == 0  # c is not (and has resolved its gateway)
    for forged in (a.ip, remote_ip):
        c.run("ip", "addr", "add", f"{forged}/32", "dev", "eth0")
        before_drops, before_echos = datapath.drop_counters()["NO_IDENTITY"], _in_echos(b)
        c.run("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", forged, b.ip, check=False)
        assert datapath.drop_counters()["NO_IDENTITY"] - before_drops >= 3, forged
        assert _in_echos(b) == before_echos, f"b received echo requests sent by c as {forged}"
        c.run("ip", "addr", "del", f"{forged}/32", "dev", "eth0")
    assert ping(a, b.ip, count=1)[1] == 1  # the real a is unaffected


_SEND = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(({src!r}, 40001)); " \
        "[s.sendto(b'{tag}', ({dst!r}, 9000)) for _ in range(5)]"
_RECV = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 9000)); s.settimeout(3)\n" \
        "seen = []\n" \
        "try:\n" \
        "    while True: seen.append(s.recv(64).decode())\n" \
        "except socket.timeout: pass\n" \
        "print(seen.count('real'), seen.count('forged'))"


def test_forged_packet_of_an_established_flow_is_not_fast_pathed(topo: Topology, datapath) -> None:
    """The established-flow fast path skips the source's endpoint lookup: the flow entry must
    then prove the veth. c sends with a's address AND a's exact ports, into a flow a established."""
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    assert ping(c, b.ip, count=1)[1] == 1  # c has resolved its gateway
    recv = b.popen("python3", "-c", _RECV)
    try:
        deadline = time.monotonic() + 20
        while ":9000 " not in b.run("ss", "-Huln", "sport = :9000").stdout:  # wait for the receiver
            assert time.monotonic() < deadline and recv.poll() is None, "receiver did not start"
            time.sleep(0.05)
        a.run("python3", "-c", _SEND.format(src=a.ip, dst=b.ip, tag="real"))  # the flow a:40001 -> b:9000
        c.run("ip", "addr", "add", f"{a.ip}/32", "dev", "eth0")
        before = datapath.drop_counters()["NO_IDENTITY"]
        c.run("python3", "-c", _SEND.format(src=a.ip, dst=b.ip, tag="forged"))
        out, _ = recv.communicate(timeout=30)
    finally:
        recv.kill()
        c.run("ip", "addr", "del", f"{a.ip}/32", "dev", "eth0", check=False)
    real, forged = (int(x) for x in out.split())
    assert real == 5 and forged == 0, out
    assert datapath.drop_counters()["NO_IDENTITY"] - before >= 5
