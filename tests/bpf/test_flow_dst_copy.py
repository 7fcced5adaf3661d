"""An established flow's packets are delivered from the flow entry's copy of the destination (its
host veth and MACs, no endpoint lookup), and that copy never outlives the endpoint: when the
address moves to another pod (a new veth and MACs), by an update in place or by a delete and an
add, the same flow (one UDP 5-tuple throughout) reaches the new pod."""

from __future__ import annotations

import ipaddress
import select
import socket
import subprocess

import pytest

from tests.bpf.topo import Pod, Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

SPORT, DPORT = 40123, 9999

_RECV = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {DPORT}))
print("ready", flush=True)
while True:
    print(s.recvfrom(100)[0].decode(), flush=True)
"""

_SEND = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {SPORT}))
s.sendto(sys.argv[1].encode(), (sys.argv[2], {DPORT}))
"""


def _line(p: subprocess.Popen[str], timeout: float = 10) -> str:
    assert p.stdout is not None
    r, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline().strip() if r else ""


def _receiver(pod: Pod) -> subprocess.Popen[str]:
    p = pod.popen("python3", "-c", _RECV)
    assert _line(p) == "ready"
    return p


def _copy(datapath, a: Pod, ip: str) -> tuple[int, bytes]:
    """(dst_ifindex, dst_mac) of the flow entry a:SPORT -> ip:DPORT."""
    from novanet_ebpf_policy.layouts import FlowKey, FlowState

    def ip_num(x: str) -> int:
        return int(ipaddress.IPv4Address(x))

    for k, v in datapath._m().items("ct"):
        fk = FlowKey.from_buffer_copy(k)
        if (fk.src_ip, fk.dst_ip, fk.src_port, fk.dst_port) == (ip_num(a.ip), ip_num(ip), SPORT, DPORT):
            st = FlowState.from_buffer_copy(v)
            return st.dst_ifindex, bytes(st.dst_mac)
    raise AssertionError("no flow entry for the UDP flow")


def _macs(pod: Pod) -> bytes:
    return bytes.fromhex(pod.mac.replace(":", "") + pod.host_mac.replace(":", ""))


def test_moved_address_takes_the_established_flow_along(topo: Topology, datapath) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    procs = [_receiver(b)]
    try:
        a.run("python3", "-c", _SEND, "one", b.ip)
        assert _line(procs[0]) == "one"
        assert _copy(datapath, a, b.ip) == (socket.if_nametoindex(b.host_if), _macs(b))
        a.run("python3", "-c", _SEND, "two", b.ip)  # the fast path, from the copy
        assert _line(procs[0]) == "two"

        # b's address now belongs to a new pod: the endpoint updated in place
        e = topo.add_pod("e", b.ip, b.identity)
        datapath.upsert_endpoint(e.endpoint(topo.gateway))
        procs.append(_receiver(e))
        a.run("python3", "-c", _SEND, "three", b.ip)
        assert _line(procs[1]) == "three"
        assert _copy(datapath, a, b.ip) == (socket.if_nametoindex(e.host_if), _macs(e))

        # and back to b, by a delete and an add
        datapath.delete_endpoint(e.ip, e.host_if)
        datapath.upsert_endpoint(b.endpoint(topo.gateway))
        a.run("python3", "-c", _SEND, "four", b.ip)
        assert _line(procs[0]) == "four"
        assert _line(procs[1], timeout=0.5) == ""  # nothing of it reached the old copy's pod
        assert _copy(datapath, a, b.ip) == (socket.if_nametoindex(b.host_if), _macs(b))
    finally:
        for p in procs:
            p.kill()
            p.wait()
