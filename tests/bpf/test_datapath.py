"""The ebpf datapath on a real node/pod netns topology (ip_forward=0, no per-pod routes needed)."""

from __future__ import annotations

import time

import pytest

from tests.bpf.topo import Topology, ping

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


def test_ping_between_pods_without_forwarding(topo: Topology, datapath) -> None:
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    assert topo_sysctl(topo) == "0"
    assert ping(a, b.ip)[1] == 3
    assert ping(c, a.ip)[1] == 3
    st = datapath.status()
    assert st["attach_mode"] == "tcx"
    assert {(lk["interface"], lk["direction"]) for lk in st["links"]} == {
        (p.host_if, d) for p in topo.pods.values() for d in ("ingress", "egress")}
    # the pod resolved its gateway through the BPF ARP responder: host veth MAC
    neigh = a.run("ip", "neigh", "show", topo.gateway).stdout
    assert a.host_mac in neigh


def topo_sysctl(topo: Topology) -> str:
    from tests.bpf.topo import sh

    return sh("ip", "netns", "exec", topo.node, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()


def test_tcp_and_udp_between_pods(topo: Topology, datapath) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    srv = b.popen("python3", "-c", _ECHO_SERVER)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        out = a.run("python3", "-c", _ECHO_CLIENT.format(ip=b.ip), timeout=30).stdout
        assert out.split() == ["tcp:hello-tcp", "udp:hello-udp"]
    finally:
        srv.kill()
        srv.wait()


def test_detaching_breaks_forwarding(topo: Topology, datapath) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    assert ping(a, b.ip)[1] == 3
    datapath.pinwatch.stop()  # it would re-attach the links (test_pins_removed.py); here: without them
    datapath.attacher.detach(a.host_if)
    assert ping(a, b.ip, count=3, deadline=4)[1] == 0  # no BPF: ip_forward=0 drops it
    datapath.upsert_endpoint(a.endpoint(topo.gateway))
    assert ping(a, b.ip)[1] == 3


def test_list_endpoints_reads_pinned_map(topo: Topology, datapath) -> None:
    eps = datapath.list_endpoints()
    assert [(e["ip"], e["identity"], e["host_ifname"], e["mac"], e["local"]) for e in eps] == [
        (p.ip, p.identity, p.host_if, p.mac, True) for p in topo.pods.values()]
    from novanet_core.types import RemoteEndpoint

    datapath.upsert_remote(RemoteEndpoint(ip="10.42.5.7", identity=4242, node_ip="172.31.251.9"))
    remote = [e for e in datapath.list_endpoints() if e["ip"] == "10.42.5.7"]
    assert remote == [{"ip": "10.42.5.7", "identity": 4242, "local": False, "ifindex": 0, "host_ifname": None,
                       "mac": "00:00:00:00:00:00", "host_mac": "00:00:00:00:00:00", "node_ip": "172.31.251.9"}]
    datapath.delete_remote("10.42.5.7")
    datapath.delete_endpoint(topo.pods["c"].ip, topo.pods["c"].host_if)
    assert [e["ip"] for e in datapath.list_endpoints()] == [topo.pods["a"].ip, topo.pods["b"].ip]
    assert not any(lk["interface"] == topo.pods["c"].host_if for lk in datapath.links())


def test_explicit_deny_and_default_deny_have_distinct_reasons(topo: Topology, datapath) -> None:
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    datapath.upsert_policy({"src_identity": a.identity, "dst_identity": b.identity, "protocol": "icmp",
                            "action": "deny"})
    before = datapath.drop_counters()
    assert ping(a, b.ip, count=2, deadline=3)[1] == 0
    assert ping(c, b.ip)[1] == 3  # other pairs unaffected (default allow)
    mid = datapath.drop_counters()
    assert mid["POLICY_DENY_RULE"] - before["POLICY_DENY_RULE"] >= 2
    assert mid["POLICY_DENIED"] == before["POLICY_DENIED"]

    datapath.configure({"defaultDeny": True})
    assert ping(c, b.ip, count=2, deadline=3)[1] == 0  # established flow re-evaluated: denied now
    after = datapath.drop_counters()
    assert after["POLICY_DENIED"] - mid["POLICY_DENIED"] >= 2
    datapath.upsert_policy({"src_identity": c.identity, "dst_identity": b.identity, "protocol": "icmp",
                            "action": "allow"})
    assert ping(c, b.ip)[1] == 3  # replies pass via the flow table, no rule for b -> c needed
    events = _wait_events(datapath, lambda ev: ev["drop_reason_name"] == "POLICY_DENIED")
    ev = events[-1]
    assert (ev["src_ip"], ev["dst_ip"], ev["src_identity"], ev["dst_identity"], ev["verdict"], ev["protocol"]) == (
        c.ip, b.ip, c.identity, b.identity, "DENY", 1)
    deny_rule = [e for e in datapath.flows.recent(drops_only=True, limit=1000)
                 if e["drop_reason_name"] == "POLICY_DENY_RULE"]
    assert deny_rule and deny_rule[0]["src_identity"] == a.identity


def _wait_events(dp, pred, timeout: float = 5.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        evs = [e for e in dp.flows.recent(limit=10000) if pred(e)]
        if evs:
            return evs
        time.sleep(0.05)
    raise AssertionError("no matching flow event")


def test_new_flow_events_and_identity_filter(topo: Topology, datapath) -> None:
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    ping(a, b.ip, count=3)
    ping(c, a.ip, count=1)
    evs = _wait_events(datapath, lambda e: e["verdict"] == "ALLOW" and e["src_ip"] == a.ip and e["dst_ip"] == b.ip)
    assert len(evs) == 1  # one event per new flow, not per packet
    assert evs[0]["src_identity"] == a.identity and evs[0]["dst_identity"] == b.identity
    only_b = datapath.flows.recent(identity=b.identity, limit=1000)
    assert only_b and all(b.identity in (e["src_identity"], e["dst_identity"]) for e in only_b)


def test_unknown_source_dropped_no_identity(topo: Topology, datapath) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    assert ping(a, b.ip, count=1)[1] == 1  # resolves the gateway (the ARP responder only answers
    a.run("ip", "addr", "add", "10.42.0.99/32", "dev", "eth0")  # known endpoints)
    before = datapath.drop_counters()["NO_IDENTITY"]
    a.run("ping", "-c", "2", "-W", "1", "-I", "10.42.0.99", b.ip, check=False)
    assert datapath.drop_counters()["NO_IDENTITY"] - before >= 2


def test_host_reaches_pod(topo: Topology, datapath) -> None:
    # the node (its own netns: we are in it) talks to a pod through the /32 route; replies come
    # back through the ARP responder and the from-pod program's pass-to-host path
    from tests.bpf.topo import sh

    out = sh("ip", "netns", "exec", topo.node, "ping", "-c", "2", "-W", "2", topo.pods["a"].ip, check=False).stdout
    assert " 0% packet loss" in out


_ECHO_SERVER = r"""
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", 7000)); t.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7001))
def udp():
    while True:
        d, a = u.recvfrom(100); u.sendto(d, a)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = t.accept(); c.sendall(c.recv(100)); c.close()
"""

_ECHO_CLIENT = r"""
import socket
c = socket.create_connection(("{ip}", 7000), timeout=5); c.sendall(b"hello-tcp"); print("tcp:" + c.recv(100).decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5); u.sendto(b"hello-udp", ("{ip}", 7001))
print("udp:" + u.recv(100).decode())
"""
