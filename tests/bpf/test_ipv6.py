"""IPv6 in the ebpf datapath on a real node/pod netns topology: dual-stack pods on one node,
neighbour discovery answered in BPF, same-node redirect, the IPv6 flow table and NetworkPolicy.

The node has no IPv6 forwarding, no proxy NDP and no neighbour entries: what reaches the other
pod went through the programs."""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from novanet_core.backends import ConfigError
from novanet_core.types import ServiceBackend, ServiceFrontend
from tests import netpol_cases as nc
from tests.bpf.conftest import started_datapath
from tests.bpf.netpol_model import CASES, SHORT, Model, run_case
from tests.bpf.topo import Pod, parse_ping, sh, wait_for
from tests.bpf.topo6 import GW6, NODE_IP6, DualStackTopology, Pod6

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

# One topology and one datapath for the module (a compile is the slow part); each test undoes
# what it changes.
@pytest.fixture(scope="module")
def topo6() -> Iterator[DualStackTopology]:
    from novanet_core.bpf import bpffs

    bpffs.ensure_mounted()
    t = DualStackTopology()
    try:
        t.create()
        yield t
    finally:
        t.destroy()


@pytest.fixture(scope="module")
def dp6(topo6: DualStackTopology) -> Iterator[object]:
    with started_datapath(topo6) as dp:
        yield dp


def ping6(src: Pod, dst: str, count: int = 3, deadline: float = 10) -> int:
    r = src.run("ping", "-6", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", "-w", str(deadline), dst,
                check=False, timeout=deadline + 30)
    return parse_ping(r.stdout)[1]


def _events(dp, pred, timeout: float = 5.0) -> list[dict]:
    found: list[dict] = []

    def look() -> bool:
        found[:] = [e for e in dp.flows.recent(limit=10000) if pred(e)]
        return bool(found)

    wait_for(look, "a matching flow event", timeout)
    return found


def test_ping6_same_node_through_bpf_neighbour_discovery(topo6: DualStackTopology, dp6) -> None:
    a, b, c = topo6.pods["a"], topo6.pods["b"], topo6.pods["c"]
    assert ping6(a, b.ip6) == 3
    assert ping6(c, a.ip6) == 3
    # the gateway was resolved by the BPF responder: the host veth's MAC, no kernel proxy NDP
    assert a.host_mac in a.run("ip", "-6", "neigh", "show", GW6).stdout
    assert sh("ip", "netns", "exec", topo6.node, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "0"
    assert sh("ip", "-6", "-n", topo6.node, "neigh", "show", "proxy").stdout.strip() == ""
    ev = _events(dp6, lambda e: e["verdict"] == "ALLOW" and e["src_ip"] == a.ip6 and e["dst_ip"] == b.ip6)
    assert len(ev) == 1 and ev[0]["src_identity"] == a.identity and ev[0]["protocol"] == 58
    # IPv4 unchanged beside it
    assert parse_ping(a.run("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-w", "10", b.ip, check=False).stdout)[1] == 2
    listed = {e["ip"]: e for e in dp6.list_endpoints()}
    assert listed[a.ip6]["identity"] == listed[a.ip]["identity"] == a.identity
    assert [e["ip"] for e in dp6.list_endpoints()][-3:] == [a.ip6, b.ip6, c.ip6]  # IPv4 first, then IPv6


def test_tcp_over_ipv6_and_the_host_reaches_a_pod(topo6: DualStackTopology, dp6) -> None:
    a, b = topo6.pods["a"], topo6.pods["b"]
    srv = b.popen("python3", "-c", _SERVER)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        out = a.run("python3", "-c", _CLIENT.format(ip=b.ip6), timeout=30).stdout
        assert out.split() == ["tcp:hello-tcp6"]
    finally:
        srv.kill()
        srv.wait()
    # the node reaches a pod over its /128 route; the reply crosses from-pod to the stack
    out = sh("ip", "netns", "exec", topo6.node, "ping", "-6", "-c", "2", "-W", "2", a.ip6, check=False).stdout
    assert " 0% packet loss" in out


def test_spoofed_ipv6_source_is_dropped_no_identity(topo6: DualStackTopology, dp6) -> None:
    a, b, c = topo6.pods["a"], topo6.pods["b"], topo6.pods["c"]
    assert ping6(a, b.ip6, count=1) == 1
    a.run("ip", "-6", "addr", "add", f"{c.ip6}/128", "dev", "eth0", "nodad")  # another pod's address
    try:
        before = dp6.drop_counters()["NO_IDENTITY"]
        a.run("ping", "-6", "-c", "2", "-W", "1", "-I", c.ip6, b.ip6, check=False)
        assert dp6.drop_counters()["NO_IDENTITY"] - before >= 2
    finally:
        a.run("ip", "-6", "addr", "del", f"{c.ip6}/128", "dev", "eth0")


def test_network_policy_over_ipv6_identities_per_pod(topo6: DualStackTopology, dp6) -> None:
    """b's ingress admits a's identity only: a reaches b on both addresses, c on neither; replies
    to a pass through the IPv6 flow table; the denial is an IPv6 event naming the ingress side."""
    from novanet_core.policy.compiled import DirectionPolicy, EndpointPolicy, IdentityPeer, Rule

    a, b, c = topo6.pods["a"], topo6.pods["b"], topo6.pods["c"]
    rule = Rule(IdentityPeer(frozenset({a.identity})), None, "default/only-a", "ingress[0]")
    ingress = DirectionPolicy(True, (rule,), ("default/only-a",))
    dp6.apply_policy([EndpointPolicy("default/b", b.identity, ip, "n", ingress, DirectionPolicy(False))
                      for ip in (b.ip, b.ip6)])
    deny = {"src_identity": a.identity, "dst_identity": b.identity, "protocol": 58, "action": "deny"}
    try:
        _policy_checks(dp6, a, b, c, deny)
    finally:
        dp6.apply_policy([], [b.ip, b.ip6])
        dp6.delete_policy(deny)


def _policy_checks(dp6, a: Pod6, b: Pod6, c: Pod6, deny: dict) -> None:
    assert ping6(a, b.ip6) == 3
    assert ping6(c, b.ip6, count=2, deadline=3) == 0
    assert parse_ping(c.run("ping", "-n", "-q", "-c", "2", "-W", "1", "-w", "3", b.ip, check=False).stdout)[1] == 0
    ev = _events(dp6, lambda e: e["drop_reason_name"] == "POLICY_DENIED" and e["dst_ip"] == b.ip6)[-1]
    assert (ev["src_ip"], ev["src_identity"], ev["dst_identity"], ev["policy_dir"], ev["hook"]) == (
        c.ip6, c.identity, b.identity, "ingress", "from_pod")
    # b starts nothing to c: a new connection from b to c is its own (c is not isolated)
    assert ping6(b, c.ip6) == 3
    # an explicit deny entry (identity pair) applies to IPv6 as to IPv4
    before = dp6.drop_counters()["POLICY_DENY_RULE"]
    dp6.upsert_policy(deny)
    assert ping6(a, b.ip6, count=2, deadline=3) == 0
    assert dp6.drop_counters()["POLICY_DENY_RULE"] - before >= 2


def _cidr_rules(direction: str, *blocks: tuple[str, tuple[str, ...]]):
    from novanet_core.policy.compiled import CidrPeer, DirectionPolicy, Rule

    rules = tuple(Rule(CidrPeer(c, e), None, "default/v6-blocks", f"{direction}[{i}]")
                  for i, (c, e) in enumerate(blocks))
    return DirectionPolicy(True, rules, ("default/v6-blocks",))


def test_ipv6_ipblock_ingress_with_nested_excepts(topo6: DualStackTopology, dp6) -> None:
    """b admits fd00:42::/64 except fd00:42::8/125 (which holds a and c), and, inside that except,
    a's /128: a reaches b over IPv6, c does not; no IPv4 block, so neither reaches b over IPv4;
    the node's own traffic is not policed; the live maps say the same as the packets."""
    from novanet_core.policy.compiled import DirectionPolicy, EndpointPolicy

    a, b, c = topo6.pods["a"], topo6.pods["b"], topo6.pods["c"]
    assert (a.ip6, c.ip6) == ("fd00:42::a", "fd00:42::c")
    ingress = _cidr_rules("ingress", ("fd00:42::/64", ("fd00:42::8/125",)), (f"{a.ip6}/128", ()))
    dp6.apply_policy([EndpointPolicy("default/b", b.identity, ip, "n", ingress, DirectionPolicy(False))
                      for ip in (b.ip, b.ip6)])
    try:
        listed = {x["cidr"] for x in dp6.list_policy()["cidrs"]}
        assert listed == {"fd00:42::/64", "fd00:42::8/125", f"{a.ip6}/128"}
        assert ping6(a, b.ip6) == 3
        assert ping6(c, b.ip6, count=2, deadline=3) == 0
        assert _ping4(a, b.ip) == 0  # an IPv6 block admits no IPv4 address
        ev = _events(dp6, lambda e: e["drop_reason_name"] == "POLICY_DENIED" and e["src_ip"] == c.ip6
                     and e["dst_ip"] == b.ip6)[-1]
        assert (ev["policy_dir"], ev["hook"], ev["policies"]) == ("ingress", "from_pod", ["default/v6-blocks"])
        out = sh("ip", "netns", "exec", topo6.node, "ping", "-6", "-c", "2", "-W", "2", b.ip6, check=False).stdout
        assert " 0% packet loss" in out  # the node (HOST) is not policed
        ok, no = (dp6.check_connection(x.ip6, b.ip6, 58, 0) for x in (a, c))
        assert ok["allowed"] and [h["peer"] for h in ok["ingress"]["hits"]] == [
            f"cidr #{_cidr_id(dp6, f'{a.ip6}/128')}"]
        assert not no["allowed"] and no["reason"] == "POLICY_DENIED (ingress)"
    finally:
        dp6.apply_policy([], [b.ip, b.ip6])


def test_ipv6_ipblock_egress_with_except(topo6: DualStackTopology, dp6) -> None:
    """a may send to ::/0 except c's /128: b over IPv6 yes, c over IPv6 no (an egress drop at a's
    hook), and nothing over IPv4 (no IPv4 block); c's replies to a's earlier flows are not at stake."""
    from novanet_core.policy.compiled import DirectionPolicy, EndpointPolicy

    a, b, c = topo6.pods["a"], topo6.pods["b"], topo6.pods["c"]
    egress = _cidr_rules("egress", ("::/0", (f"{c.ip6}/128",)))
    dp6.apply_policy([EndpointPolicy("default/a", a.identity, ip, "n", DirectionPolicy(False), egress)
                      for ip in (a.ip, a.ip6)])
    try:
        assert ping6(a, b.ip6) == 3
        assert ping6(a, c.ip6, count=2, deadline=3) == 0
        assert _ping4(a, b.ip) == 0
        ev = _events(dp6, lambda e: e["drop_reason_name"] == "POLICY_DENIED" and e["src_ip"] == a.ip6
                     and e["dst_ip"] == c.ip6)[-1]
        assert (ev["policy_dir"], ev["hook"], ev["src_identity"], ev["policies"]) == (
            "egress", "from_pod", a.identity, ["default/v6-blocks"])
        assert "egress of default/a isolated by default/v6-blocks" in ev["policy_reason"]
        assert ping6(c, a.ip6) == 3  # a's ingress is not isolated; the replies belong to c's flow
    finally:
        dp6.apply_policy([], [a.ip, a.ip6])


@pytest.fixture
def model(topo6: DualStackTopology, dp6) -> Iterator[Model]:
    """The netpol model's nine pods: this module's a, b, c and six more, taken out again after."""
    original = {n: p.identity for n, p in topo6.pods.items()}
    added = [chr(ord("a") + i) for i in range(len(original), len(nc.PODS))]
    m = None
    try:
        for i, name in enumerate(added, start=len(original)):
            p = topo6.add_pod(name, f"10.42.0.{10 + i}", 1000 + i)
            dp6.upsert_endpoint(p.endpoint(topo6.gateway))
        m = Model(topo6, dp6)
        yield m
    finally:
        if m is not None:
            m.close()
        dp6.apply_policy([], [ip for p in topo6.pods.values() for ip in (p.ip, p.ip6)])
        for name in added:
            p = topo6.pods.pop(name)
            for ip in (p.ip, p.ip6):
                dp6.delete_endpoint(ip, p.host_if)
            sh("ip", "netns", "del", p.ns, check=False)
        for name, ident in original.items():
            topo6.pods[name].identity = ident
            dp6.upsert_endpoint(topo6.pods[name].endpoint(topo6.gateway))


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SHORT], ids=lambda c: f"{c.id:02d}")
def test_upstream_netpol_case_over_both_families(model: Model, case) -> None:
    """A short form of tests/bpf/test_netpol_dual_stack.py: a namespaceSelector and
    an ipBlock with an except holding the pod's own address, each over IPv6, then IPv4."""
    run_case(model, case)


def _ping4(src: Pod, dst: str) -> int:
    return parse_ping(src.run("ping", "-n", "-q", "-c", "2", "-W", "1", "-w", "3", dst, check=False).stdout)[1]


def _cidr_id(dp6, cidr: str) -> int:
    return next(x["id"] for x in dp6.list_policy()["cidrs"] if x["cidr"] == cidr)


_SERVER = r"""
import socket
t = socket.socket(socket.AF_INET6); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("::", 7000)); t.listen()
print("ready", flush=True)
while True:
    c, _ = t.accept(); c.sendall(c.recv(100)); c.close()
"""

_CLIENT = r"""
import socket
c = socket.create_connection(("{ip}", 7000), timeout=5); c.sendall(b"hello-tcp6"); print("tcp:" + c.recv(100).decode())
"""

_RECV6 = r"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 9999))
print("ready", flush=True)
while True:
    print(s.recvfrom(100)[0].decode(), flush=True)
"""

_SEND6 = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 40123))
s.sendto(sys.argv[1].encode(), (sys.argv[2], 9999))
"""


def _line(p: subprocess.Popen[str], timeout: float = 10) -> str:
    assert p.stdout is not None
    r, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline().strip() if r else ""


def _receiver6(pod: Pod) -> subprocess.Popen[str]:
    p = pod.popen("python3", "-c", _RECV6)
    assert _line(p) == "ready"
    return p


def _copy6(dp6, a: Pod6, ip6: str) -> tuple[int, bytes]:
    """(dst_ifindex, dst_mac) of the ct6 entry a:40123 -> ip6:9999."""
    from novanet_ebpf_policy.layouts import Flow6Key, FlowState

    want = (ipaddress.IPv6Address(a.ip6).packed, ipaddress.IPv6Address(ip6).packed, 40123, 9999)
    for k, v in dp6._m().items("ct6"):
        fk = Flow6Key.from_buffer_copy(k)
        if (bytes(fk.src_ip), bytes(fk.dst_ip), fk.src_port, fk.dst_port) == want:
            st = FlowState.from_buffer_copy(v)
            return st.dst_ifindex, bytes(st.dst_mac)
    raise AssertionError("no ct6 entry for the UDP flow")


def test_established_ipv6_flow_delivers_from_the_entry_copy_and_follows_a_moved_address(
    topo6: DualStackTopology, dp6
) -> None:
    """As tests/bpf/test_flow_dst_copy.py for ct6: the flow entry carries the same-node
    destination's host veth and MACs (one lookup per established packet), and that copy follows
    the address to another pod (the same UDP 5-tuple throughout), then back by a delete and an add."""
    a, b = topo6.pods["a"], topo6.pods["b"]

    def macs(p: Pod) -> bytes:
        return bytes.fromhex(p.mac.replace(":", "") + p.host_mac.replace(":", ""))

    procs = [_receiver6(b)]
    e = None
    try:
        a.run("python3", "-c", _SEND6, "one", b.ip6)
        assert _line(procs[0]) == "one"
        assert _copy6(dp6, a, b.ip6) == (socket.if_nametoindex(b.host_if), macs(b))
        a.run("python3", "-c", _SEND6, "two", b.ip6)  # the fast path, from the copy
        assert _line(procs[0]) == "two"

        # b's IPv6 address now belongs to a new pod: the endpoint updated in place
        e = topo6.add_pod("e", "10.42.0.40", b.identity)
        e.run("ip", "-6", "addr", "add", f"{b.ip6}/128", "dev", "eth0", "nodad")
        e.ip6 = b.ip6
        dp6.upsert_endpoint(e.endpoint(topo6.gateway))
        procs.append(_receiver6(e))
        a.run("python3", "-c", _SEND6, "three", b.ip6)
        assert _line(procs[1]) == "three"
        assert _copy6(dp6, a, b.ip6) == (socket.if_nametoindex(e.host_if), macs(e))

        # and back to b, by a delete and an add
        dp6.delete_endpoint(b.ip6, e.host_if)
        dp6.upsert_endpoint(b.endpoint(topo6.gateway))
        a.run("python3", "-c", _SEND6, "four", b.ip6)
        assert _line(procs[0]) == "four"
        assert _line(procs[1], timeout=0.5) == ""  # nothing of it reached the old copy's pod
        assert _copy6(dp6, a, b.ip6) == (socket.if_nametoindex(b.host_if), macs(b))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if e is not None:
            topo6.pods.pop("e")
            dp6.delete_endpoint(e.ip, e.host_if)
            sh("ip", "netns", "del", e.ns, check=False)
            dp6.upsert_endpoint(b.endpoint(topo6.gateway))

# ------------------------------------------------------------------ Services over IPv6
# Socket level: processes started in the topology's cgroup have their connect()/sendto() to an
# IPv6 ClusterIP translated by the connect6/sendmsg6 hooks and the answers restored by
# recvmsg6/getpeername6; an AF_INET6 socket reaching an IPv4 ClusterIP by its v4-mapped address
# is translated through the IPv4 maps (docs/services.md, "IP families").

VIP6 = "fd00:96::a"
VIP4 = "10.96.100.6"

# Dual-stack listener ("::", IPV6_V6ONLY off): answers every TCP connection and UDP datagram
# with "<pod name>@<the client address it saw>".
SVC_SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def tcp():
    t = socket.socket(socket.AF_INET6); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); t.bind(("::", port)); t.listen(128)
    while True:
        c, a = t.accept(); c.sendall(("%s@%s" % (name, a[0])).encode()); c.close()
def udp():
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); u.bind(("::", port))
    while True:
        d, a = u.recvfrom(100); u.sendto(("%s@%s" % (name, a[0])).encode(), a)
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

SVC_CLIENT = str(Path(__file__).resolve().parents[1] / "support" / "svc_client.py")


@pytest.fixture(scope="module")
def servers(topo6: DualStackTopology, dp6) -> Iterator[dict[str, Pod6]]:
    procs = []
    try:
        for name in ("b", "c"):
            proc = topo6.pods[name].popen("python3", "-c", SVC_SERVER, name, "8080")
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield {n: topo6.pods[n] for n in ("b", "c")}  # type: ignore[misc]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def services(dp6) -> Iterator[list[ServiceFrontend]]:
    """Frontends a test upserts; deleted after it."""
    fes: list[ServiceFrontend] = []
    try:
        yield fes
    finally:
        for fe in fes:
            dp6.delete_service(fe.key)


def frontend(ip: str, proto: str, backends: list[ServiceBackend], **kw: object) -> ServiceFrontend:
    fam = "/IPv6" if ":" in ip else ""
    return ServiceFrontend(
        key=f"t/web:80/{proto}{fam}",
        namespace="t",
        name="web",
        port_name="",
        protocol=proto,
        ip=ip,
        port=80,
        kind="ClusterIP",
        backends=backends,
        **kw,
    )  # type: ignore[arg-type]


def be6(pod: Pod6, proto: str = "TCP", **kw: object) -> ServiceBackend:
    return ServiceBackend(ip=pod.ip6, port=8080, protocol=proto, local=True, **kw)  # type: ignore[arg-type]


def program(dp6, services: list[ServiceFrontend], *fes: ServiceFrontend) -> None:
    for fe in fes:
        dp6.upsert_service(fe)
        services.append(fe)


def client(topo6: DualStackTopology, pod: Pod6, ip: str, n: int, proto: str) -> dict[str, list[str]]:
    r = pod.run_in_cgroup(topo6.cgroup, "python3", SVC_CLIENT, ip, "80", str(n), proto, timeout=120)
    out = json.loads(r.stdout)
    pairs = [a.partition("@") for a in out["answers"]]
    return {**out, "answers": [p[0] for p in pairs], "seen": [p[2] for p in pairs]}


def test_ipv6_clusterip_tcp_udp_at_socket_level(topo6, dp6, servers, services) -> None:
    a, b, c = topo6.pods["a"], servers["b"], servers["c"]
    program(
        dp6,
        services,
        frontend(VIP6, "TCP", [be6(b), be6(c)]),
        frontend(VIP6, "UDP", [be6(b, "UDP"), be6(c, "UDP")]),
    )
    before = dp6.service_status()["translations"]
    tcp = client(topo6, a, VIP6, 20, "tcp")
    udp = client(topo6, a, VIP6, 20, "udp")
    assert tcp["errors"] == udp["errors"] == []
    assert set(tcp["answers"]) == set(udp["answers"]) == {"b", "c"}  # both backends picked
    assert set(tcp["seen"]) == set(udp["seen"]) == {a.ip6}  # the backends saw the pod's own address
    # getpeername6 / recvmsg6 show the ClusterIP, never the backend
    assert set(tcp["peers"]) == set(udp["peers"]) == {f"{VIP6}:80"}
    after = dp6.service_status()["translations"]
    assert after["socket6"] - before["socket6"] == 40
    assert after["reverse_socket6"] - before["reverse_socket6"] >= 40
    assert after["socket"] == before["socket"] and after["packet"] == before["packet"]
    from novanet_ebpf_policy.metrics import DatapathCollector
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(DatapathCollector(lambda: dp6))
    v6 = reg.get_sample_value(
        "novanet_dataplane_service_translations_total", {"path": "socket", "family": "ipv6"}
    )
    assert v6 is not None and v6 >= 40
    (tcp_fe,) = [s for s in dp6.list_services() if s["protocol"] == "TCP"]
    assert (tcp_fe["ip"], tcp_fe["family"], [x["ip"] for x in tcp_fe["backends"]]) == (
        VIP6,
        "IPv6",
        sorted([b.ip6, c.ip6]),
    )


def test_ipv6_no_selectable_backend_is_refused_and_counted(topo6, dp6, servers, services) -> None:
    a, b, c = topo6.pods["a"], servers["b"], servers["c"]
    program(
        dp6,
        services,
        frontend(VIP6, "TCP", [be6(b, ready=False), be6(c, terminating=True, serving=False)]),
        frontend(VIP6, "UDP", []),
    )
    before = dp6.drop_counters()["NO_SERVICE_BACKEND"]
    tcp = client(topo6, a, VIP6, 2, "tcp")
    udp = client(topo6, a, VIP6, 2, "udp")
    assert tcp["errors"] == udp["errors"] == ["ConnectionRefusedError:111"] * 2  # at once, not a timeout
    assert dp6.drop_counters()["NO_SERVICE_BACKEND"] - before == 4


def test_ipv6_terminating_backend_and_client_ip_affinity(topo6, dp6, servers, services) -> None:
    a, b, c = topo6.pods["a"], servers["b"], servers["c"]
    program(dp6, services, frontend(VIP6, "TCP", [be6(b), be6(c, terminating=True)]))
    assert set(client(topo6, a, VIP6, 10, "tcp")["answers"]) == {"b"}  # the terminating one takes none
    program(dp6, services, frontend(VIP6, "TCP", [be6(b), be6(c)], affinity_timeout=60))
    got = client(topo6, a, VIP6, 10, "tcp")
    assert got["errors"] == [] and len(set(got["answers"])) == 1  # pinned to one backend


def test_v4_mapped_address_on_an_ipv6_socket_reaches_the_ipv4_clusterip(topo6, dp6, servers, services) -> None:
    a, b = topo6.pods["a"], servers["b"]
    program(
        dp6,
        services,
        frontend(VIP4, "TCP", [ServiceBackend(ip=b.ip, port=8080, protocol="TCP", local=True)]),
        frontend(VIP4, "UDP", [ServiceBackend(ip=b.ip, port=8080, protocol="UDP", local=True)]),
    )
    before = dp6.service_status()["translations"]
    mapped = f"::ffff:{VIP4}"
    tcp = client(topo6, a, mapped, 3, "tcp")
    udp = client(topo6, a, mapped, 3, "udp")
    assert tcp["errors"] == udp["errors"] == []
    assert set(tcp["answers"]) == set(udp["answers"]) == {"b"}
    assert set(tcp["peers"]) == set(udp["peers"]) == {f"{mapped}:80"}
    after = dp6.service_status()["translations"]
    assert after["socket"] - before["socket"] == 6  # IPv4 frontends: counted as IPv4 translations
    assert after["socket6"] == before["socket6"]


def test_ipv6_frontend_with_an_ipv4_backend_is_refused(dp6) -> None:
    fe = frontend(VIP6, "TCP", [ServiceBackend(ip="10.42.0.9", port=80, protocol="TCP")])
    with pytest.raises(ConfigError, match=r"frontend\.backends\[0\]\.ip"):
        dp6.upsert_service(fe)
    assert all(s["ip"] != VIP6 for s in dp6.list_services())


def test_a_restarted_programmer_adopts_ipv6_frontends_from_the_maps(topo6, dp6, servers, services) -> None:
    """What a dataplane restart does: the programmer rebuilds its mirror from the live maps of
    both families (no write for an unchanged frontend, stale banks of either family removed)."""
    from novanet_ebpf_policy.layouts import Backend6Value, BackendKey
    from novanet_ebpf_policy.services import ServiceProgrammer

    b, c = servers["b"], servers["c"]
    fe6 = frontend(VIP6, "TCP", [be6(b), be6(c)])
    fe4 = frontend(VIP4, "TCP", [ServiceBackend(ip=b.ip, port=8080, protocol="TCP", local=True)])
    program(dp6, services, fe6, fe4)
    stale = BackendKey(bank=0xFFFF0000, slot=0)  # a bank no frontend points at (an interrupted change)
    dp6.maps.update("backends6", stale, Backend6Value(port=1))
    again = ServiceProgrammer(dp6.maps)
    assert again.live[fe6.key].family.version == 6 and again.live[fe4.key].family.version == 4
    assert dp6.maps.lookup("backends6", stale) is None
    assert again.upsert(fe6)["changed"] is False and again.upsert(fe4)["changed"] is False
    got = client(topo6, topo6.pods["a"], VIP6, 4, "tcp")
    assert got["errors"] == [] and set(got["answers"]) <= {"b", "c"}


# ------------------------------------------------------------------ Services over IPv6, per packet
# Processes started with a bare `ip netns exec` are outside the topology's cgroup: the socket hooks
# never see them, so their IPv6 Service traffic is translated per packet (nv_from_pod6_prog,
# bpf/services6.c), and so is a client on the node's network reaching its IPv6 address on a nodePort
# (nv_from_underlay).


def bare_client(pod: Pod6 | str, ip: str, port: int, n: int, proto: str) -> dict[str, list[str]]:
    argv = ("python3", SVC_CLIENT, ip, str(port), str(n), proto)
    r = pod.run(*argv, timeout=120) if isinstance(pod, Pod) else sh("ip", "netns", "exec", pod, *argv, timeout=120)
    out = json.loads(r.stdout)
    pairs = [a.partition("@") for a in out["answers"]]
    return {**out, "answers": [p[0] for p in pairs], "seen": [p[2] for p in pairs]}


@pytest.mark.long  # make test keeps its time: the IPv6 path itself is covered above
def test_ipv6_clusterip_per_packet_outside_the_cgroup(topo6, dp6, servers, services) -> None:
    a, b, c = topo6.pods["a"], servers["b"], servers["c"]
    program(dp6, services, frontend(VIP6, "TCP", [be6(b), be6(c)]),
            frontend(VIP6, "UDP", [be6(b, "UDP"), be6(c, "UDP")]))
    before = dp6.service_status()["translations"]
    tcp = bare_client(a, VIP6, 80, 20, "tcp")
    udp = bare_client(a, VIP6, 80, 20, "udp")
    assert tcp["errors"] == udp["errors"] == []
    assert set(tcp["answers"]) == set(udp["answers"]) == {"b", "c"}
    assert set(tcp["seen"]) == set(udp["seen"]) == {a.ip6}
    # the replies were rewritten back to the ClusterIP (no socket hook did it)
    assert set(tcp["peers"]) == set(udp["peers"]) == {f"{VIP6}:80"}
    after = dp6.service_status()["translations"]
    assert after["packet6"] - before["packet6"] == 40
    assert after["socket6"] == before["socket6"] and after["packet"] == before["packet"]
    # no selectable backend: a RST / ICMPv6 port unreachable at once, counted
    program(dp6, services, frontend(VIP6, "TCP", []), frontend(VIP6, "UDP", []))
    drops = dp6.drop_counters()["NO_SERVICE_BACKEND"]
    tcp = bare_client(a, VIP6, 80, 2, "tcp")
    udp = bare_client(a, VIP6, 80, 2, "udp-connected")
    assert tcp["errors"] == udp["errors"] == ["ConnectionRefusedError:111"] * 2
    assert dp6.drop_counters()["NO_SERVICE_BACKEND"] - drops == 4
    ev = _events(dp6, lambda e: e["drop_reason_name"] == "NO_SERVICE_BACKEND" and e["dst_ip"] == VIP6)
    assert ev[-1]["src_ip"] == a.ip6 and ev[-1]["hook"] == "from_pod"


# SCTP over IPv6 (no SCTP sockets in this kernel): INITs through raw AF_INET6 sockets, as `novanet
# lab probe --protocol SCTP --family 6` sends them; an IPv6 raw socket gets no IP header, the source
# comes from the peer address.
SCTP6 = r"""
import json, select, socket, struct, sys
from novanet_lab.sctp import crc32c, init_packet
def parse(pkt, src):
    sc = bytearray(pkt)
    sport, dport = struct.unpack_from("!HH", sc)
    (crc,) = struct.unpack_from("<I", sc, 8)
    sc[8:12] = b"\0\0\0\0"
    return {"src": src, "sport": sport, "dport": dport, "crc_ok": crc == crc32c(bytes(sc))}
def packet(sport, dport, tag, pad):
    p = bytearray(init_packet(sport, dport, tag) + bytes(pad))
    p[8:12] = b"\0\0\0\0"
    p[8:12] = struct.pack("<I", crc32c(bytes(p)))
    return bytes(p)
def wait(s):
    if not select.select([s], [], [], 60)[0]:
        return None
    d, a = s.recvfrom(65535)
    return parse(d, a[0])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 132)
if sys.argv[1] == "recv":
    print("ready", flush=True)
    got = wait(s)
    print(json.dumps(got), flush=True)
    if got:
        s.sendto(packet(int(sys.argv[2]), got["sport"], 7, 64), (got["src"], 0))
else:
    ip, port, sport = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s.sendto(packet(sport, port, 99, 100), (ip, 0))
    print(json.dumps(wait(s)), flush=True)
"""


@pytest.mark.long  # make test keeps its time: the IPv6 path itself is covered above
def test_ipv6_sctp_clusterip_per_packet_both_ways(topo6, dp6, services) -> None:
    import sys

    a, b = topo6.pods["a"], topo6.pods["b"]
    program(dp6, services, frontend(VIP6, "SCTP", [be6(b, "SCTP")]))  # no longer refused over IPv6
    rx = b.popen(sys.executable, "-c", SCTP6, "recv", "8080")
    try:
        assert _line(rx) == "ready"
        out = a.run(sys.executable, "-c", SCTP6, "send", VIP6, "80", "40001", timeout=90).stdout
        assert json.loads(_line(rx, 60)) == {"src": a.ip6, "sport": 40001, "dport": 8080, "crc_ok": True}
        assert json.loads(out) == {"src": VIP6, "sport": 80, "dport": 40001, "crc_ok": True}
    finally:
        rx.kill()
        rx.wait()


NODEPORT6 = 30086
OUTSIDE6 = "fd00:31:252::2"


@pytest.fixture
def outside6(topo6: DualStackTopology, dp6, servers) -> Iterator[str]:
    """A netns on an "underlay" veth of the node (node side fd00:31:252::1, outside ::2) routing
    the node's IPv6 address through it, with nv_from_underlay attached to the node's side. The
    interfaces a NodePort reply leaves by the FIB lookup from forward IPv6 (per device: the node's
    `all` setting stays off, as the rest of the module checks)."""
    from novanet_core.bpf.netns import netns

    ext, node_if = f"v6bx{topo6.uid}", f"v6u{topo6.uid}"
    fwd = [node_if] + [servers[n].host_if for n in ("b", "c")]
    sh("ip", "netns", "add", ext)
    try:
        sh("ip", "-n", ext, "link", "set", "lo", "up")
        sh("ip", "link", "add", node_if, "netns", topo6.node, "type", "veth", "peer", "name", "eth0", "netns", ext)
        sh("ip", "-n", topo6.node, "addr", "add", "fd00:31:252::1/64", "dev", node_if, "nodad")
        sh("ip", "-n", topo6.node, "link", "set", node_if, "up")
        sh("ip", "-n", ext, "addr", "add", f"{OUTSIDE6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ext, "link", "set", "eth0", "up")
        sh("ip", "-n", ext, "-6", "route", "add", f"{NODE_IP6}/128", "via", "fd00:31:252::1")
        for dev in fwd:
            sh("ip", "netns", "exec", topo6.node, "sysctl", "-qw", f"net.ipv6.conf.{dev}.forwarding=1")
        with netns(topo6.node):
            dp6.svc_attach.attach_underlay(node_if, socket.if_nametoindex(node_if), dp6.prog.fds)
        yield ext
    finally:
        with netns(topo6.node):
            dp6.svc_attach.detach_underlay()
        for dev in fwd[1:]:
            sh("ip", "netns", "exec", topo6.node, "sysctl", "-qw", f"net.ipv6.conf.{dev}.forwarding=0", check=False)
        sh("ip", "netns", "del", ext, check=False)


def nodeport6(proto: str, backends: list[ServiceBackend], local: bool) -> ServiceFrontend:
    return ServiceFrontend(key=f"t/web:{NODEPORT6}/{proto}/nodeport/IPv6", namespace="t", name="web", port_name="",
                           protocol=proto, ip=NODE_IP6, port=NODEPORT6, kind="NodePort", backends=backends,
                           external_local=local)


@pytest.mark.long  # make test keeps its time: the IPv6 path itself is covered above
@pytest.mark.parametrize("local", [False, True], ids=["cluster", "local"])
def test_ipv6_nodeport_from_the_underlay(topo6, dp6, servers, services, outside6, local: bool) -> None:
    b, c = servers["b"], servers["c"]
    program(dp6, services, nodeport6("TCP", [be6(b), be6(c)], local),
            nodeport6("UDP", [be6(b, "UDP"), be6(c, "UDP")], local))
    before = dp6.service_status()["translations"]["nodeport6"]
    tcp = bare_client(outside6, NODE_IP6, NODEPORT6, 10, "tcp")
    udp = bare_client(outside6, NODE_IP6, NODEPORT6, 10, "udp")
    assert tcp["errors"] == udp["errors"] == []
    assert set(tcp["answers"]) | set(udp["answers"]) == {"b", "c"}
    assert set(tcp["peers"]) == set(udp["peers"]) == {f"{NODE_IP6}:{NODEPORT6}"}
    # Cluster: SNAT to the node's address; Local: the client's own address reaches the backend
    assert set(tcp["seen"]) == set(udp["seen"]) == ({OUTSIDE6} if local else {NODE_IP6})
    assert dp6.service_status()["translations"]["nodeport6"] - before == 20
    from novanet_ebpf_policy.metrics import DatapathCollector
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(DatapathCollector(lambda: dp6))
    v = reg.get_sample_value("novanet_dataplane_service_translations_total", {"path": "nodeport", "family": "ipv6"})
    assert v is not None and v >= 20


@pytest.mark.long  # make test keeps its time: the IPv6 path itself is covered above
def test_ipv6_nodeport_without_backend_is_refused(topo6, dp6, services, outside6) -> None:
    program(dp6, services, nodeport6("TCP", [], False), nodeport6("UDP", [], False))
    before = dp6.drop_counters()["NO_SERVICE_BACKEND"]
    tcp = bare_client(outside6, NODE_IP6, NODEPORT6, 2, "tcp")
    udp = bare_client(outside6, NODE_IP6, NODEPORT6, 2, "udp-connected")
    assert tcp["errors"] == udp["errors"] == ["ConnectionRefusedError:111"] * 2
    assert dp6.drop_counters()["NO_SERVICE_BACKEND"] - before == 4
    ev = _events(dp6, lambda e: e["drop_reason_name"] == "NO_SERVICE_BACKEND" and e["src_ip"] == OUTSIDE6)
    assert ev[-1]["hook"] == "from_network" and ev[-1]["dst_ip"] == NODE_IP6
