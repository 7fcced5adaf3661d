"""Service load-balancing in the ebpf datapath, on the one-node topology (real packets).

Pods' processes started with ``ip netns exec`` are outside the node's cgroup, so their Service
traffic takes the per-packet path (nv_from_pod); processes started in ``topo.cgroup`` take the
socket-level path (cgroup connect4/sendmsg4/recvmsg4/getpeername4).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novanet_core.types import ServiceBackend, ServiceFrontend
from tests.bpf.topo import Pod, Topology, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

VIP = "10.96.100.1"

# Answers every TCP connection and UDP datagram with "<pod name>@<the client address it saw>".
SERVER = r"""
import socket, sys, threading
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
def tcp(port):
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", port)); t.listen(512)
    while True:
        c, a = t.accept()
        threading.Thread(target=conn, args=(c, a), daemon=True).start()
def conn(c, a):
    try:
        c.sendall(("%s@%s" % (name, a[0])).encode())
        while True:  # then an echo until the client closes
            d = c.recv(100)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
def udp(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        d, a = u.recvfrom(100); u.sendto(("%s@%s" % (name, a[0])).encode(), a)
for p in ports:
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
    threading.Thread(target=udp, args=(p,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = str(Path(__file__).resolve().parents[1] / "support" / "svc_client.py")


@pytest.fixture
def servers(topo: Topology) -> Iterator[dict[str, Pod]]:
    procs = []
    try:
        for name in ("b", "c"):
            p = topo.pods[name]
            proc = p.popen("python3", "-c", SERVER, name, "8080", "9090")
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield {n: topo.pods[n] for n in ("b", "c")}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def frontend(port: int = 80, proto: str = "TCP", backends: list[ServiceBackend] | None = None,
             **kw: object) -> ServiceFrontend:
    return ServiceFrontend(key=f"t/web:{port}/{proto}", namespace="t", name="web", port_name="", protocol=proto,
                           ip=VIP, port=port, kind="ClusterIP", backends=backends or [], **kw)  # type: ignore[arg-type]


def be(pod: Pod, port: int = 8080, proto: str = "TCP", **kw: object) -> ServiceBackend:
    return ServiceBackend(ip=pod.ip, port=port, protocol=proto, local=True, **kw)  # type: ignore[arg-type]


def client(pod: Pod | str, port: int, n: int, proto: str = "tcp", cgroup: str | None = None,
           ip: str = VIP) -> dict[str, list[str]]:
    """From a pod, or from a bare netns (its name). ``answers`` are the backends' names,
    ``seen`` the client addresses they saw."""
    argv = ("python3", CLIENT, ip, str(port), str(n), proto)
    if isinstance(pod, str):
        r = sh("ip", "netns", "exec", pod, *argv, timeout=120)
    else:
        r = pod.run_in_cgroup(cgroup, *argv, timeout=120) if cgroup else pod.run(*argv, timeout=120)
    out = json.loads(r.stdout)
    pairs = [a.partition("@") for a in out["answers"]]
    return {**out, "answers": [p[0] for p in pairs], "seen": [p[2] for p in pairs]}


def test_clusterip_per_packet_tcp_udp(topo: Topology, datapath, servers) -> None:
    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(b), be(c)]))
    datapath.upsert_service(frontend(80, "UDP", [be(b, proto="UDP"), be(c, proto="UDP")]))
    before = datapath.service_status()["translations"]
    tcp = client(a, 80, 20, "tcp")
    assert tcp["errors"] == []
    assert set(tcp["answers"]) == {"b", "c"}  # both backends picked
    assert set(tcp["peers"]) == {f"{VIP}:80"}  # the client's socket only ever saw the ClusterIP
    udp = client(a, 80, 20, "udp")
    assert udp["errors"] == []
    assert set(udp["answers"]) == {"b", "c"}
    assert set(udp["peers"]) == {f"{VIP}:80"}  # replies reverse-translated to the ClusterIP
    after = datapath.service_status()["translations"]
    # every TCP connection is a new translation; a UDP socket that reuses a source port within
    # the idle time is the same flow
    assert after["packet"] - before["packet"] > 20
    assert after["socket"] == before["socket"]


def test_clusterip_socket_level(topo: Topology, datapath, servers) -> None:
    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(b), be(c)]))
    datapath.upsert_service(frontend(80, "UDP", [be(b, proto="UDP"), be(c, proto="UDP")]))
    before = datapath.service_status()["translations"]
    tcp = client(a, 80, 10, "tcp", cgroup=topo.cgroup)
    udp = client(a, 80, 10, "udp", cgroup=topo.cgroup)
    assert tcp["errors"] == udp["errors"] == []
    assert set(tcp["answers"]) | set(udp["answers"]) <= {"b", "c"}
    assert set(tcp["peers"]) == set(udp["peers"]) == {f"{VIP}:80"}  # getpeername4 / recvmsg4 restore the VIP
    after = datapath.service_status()["translations"]
    assert after["socket"] - before["socket"] == 20
    assert after["packet"] == before["packet"]  # the packets carried the backend's address already
    assert after["reverse_socket"] - before["reverse_socket"] >= 20


# Holds one connected UDP socket to the ClusterIP open while it opens and closes N TCP and N
# connected UDP sockets to it; each phase waits for a line on stdin (the test counts the map).
HOLDER = r"""
import socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ask(u):
    u.send(b"q\n")
    d, a = u.recvfrom(200)
    return "%s:%s" % a[:2]
held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); held.settimeout(3); held.connect((ip, port))
print(ask(held), flush=True)
sys.stdin.readline()
for _ in range(n):
    c = socket.create_connection((ip, port), timeout=3); c.recv(200); c.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3); u.connect((ip, port)); ask(u); u.close()
print("closed", flush=True)
sys.stdin.readline()
print(ask(held), flush=True)
"""


def sock_revnat_entries(topo: Topology, name: str = "sock_revnat") -> int:
    """Entries of the pinned socket reverse-translation map, by walking its keys."""
    from novanet_ebpf_policy.layouts import MAPS

    from novanet_core.bpf import pinned, syscall

    spec = MAPS[name].spec
    fd = syscall.obj_get(pinned.versioned_path(topo.bpf_root, spec))
    try:
        return sum(1 for _ in syscall.map_keys(fd, spec.key_size))
    finally:
        os.close(fd)


def test_a_closed_socket_drops_its_reverse_translation(topo: Topology, datapath, servers) -> None:
    from tests.support import cgroups

    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(b), be(c)]))
    datapath.upsert_service(frontend(80, "UDP", [be(b, proto="UDP"), be(c, proto="UDP")]))
    before, before6 = sock_revnat_entries(topo), sock_revnat_entries(topo, "sock_revnat6")
    n = 25
    argv = cgroups.argv_in(topo.cgroup, ["nsenter", f"--net=/run/netns/{a.ns}", "python3", "-c", HOLDER, VIP,
                                         "80", str(n)])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == f"{VIP}:80"
        assert sock_revnat_entries(topo) == before + 1  # the held socket's entry
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        # 2n sockets were translated and closed: their entries went with them (nv_sock_release)
        assert sock_revnat_entries(topo) == before + 1
        assert sock_revnat_entries(topo, "sock_revnat6") == before6
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == f"{VIP}:80"  # recvmsg4 still restores the ClusterIP
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert sock_revnat_entries(topo) == before  # and the held one went when it closed


def test_no_ready_backend_is_refused_at_once(topo: Topology, datapath, servers) -> None:
    a, b = topo.pods["a"], servers["b"]
    datapath.upsert_service(frontend(80, "TCP", [be(b, ready=False)]))
    datapath.upsert_service(frontend(80, "UDP", [be(b, proto="UDP", terminating=True, serving=False)]))
    before = datapath.drop_counters()["NO_SERVICE_BACKEND"]
    tcp = client(a, 80, 2, "tcp")
    udp = client(a, 80, 2, "udp-connected")
    # TCP RST and ICMP port unreachable: ECONNREFUSED (111), not a timeout
    assert tcp["errors"] == ["ConnectionRefusedError:111"] * 2
    assert udp["errors"] == ["ConnectionRefusedError:111"] * 2
    sock = client(a, 80, 1, "tcp", cgroup=topo.cgroup)
    assert sock["errors"] == ["ConnectionRefusedError:111"]
    assert datapath.drop_counters()["NO_SERVICE_BACKEND"] - before >= 5


def test_list_services_reads_the_maps(topo: Topology, datapath) -> None:
    b, c = topo.pods["b"], topo.pods["c"]
    fe = frontend(80, "TCP", [be(b), be(c, terminating=True, ready=False)], affinity_timeout=30)
    datapath.upsert_service(fe)
    (got,) = datapath.list_services()
    assert (got["key"], got["namespace"], got["name"], got["ip"], got["port"], got["protocol"], got["kind"]) == \
        (fe.key, "t", "web", VIP, 80, "TCP", "ClusterIP")
    assert got["affinity_timeout"] == 30 and got["selectable"] == 1
    assert [(x["ip"], x["ready"], x["terminating"], x["selectable"]) for x in got["backends"]] == \
        [(b.ip, True, False, True), (c.ip, False, True, False)]
    bank = got["bank"]
    datapath.upsert_service(fe)  # unchanged: nothing rewritten
    assert datapath.list_services()[0]["bank"] == bank
    datapath.delete_service(fe.key)
    assert datapath.list_services() == []
    assert datapath.service_status()["entries"]["backend_slots"] == 0


# One client port, reused (SO_LINGER 0: the RST leaves no TIME_WAIT) for a connection to each
# "ip:port" in turn; the peer it connected to and the first answer, or the error.
SAME_PORT_CLIENT = r"""
import json, socket, struct, sys
out = []
for t in sys.argv[2:]:
    ip, port = t.split(":")
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(3)
    try:
        s.connect((ip, int(port))); out.append("%s:%d %s" % (*s.getpeername(), s.recv(100).decode()))
    except OSError as e:
        out.append("error: %s" % e)
    s.close()
print(json.dumps(out))
"""


def same_port_connects(pod: Pod, targets: list[str]) -> list[str]:
    return json.loads(pod.run("python3", "-c", SAME_PORT_CLIENT, "40123", *targets, timeout=120).stdout)


def expected_answers(client_ip: str, targets: list[str]) -> list[str]:
    return [f"{t} b@{client_ip}" for t in targets]


# One UDP socket (unconnected, one source port) sending to each "ip:port" in turn: the source of
# the answer it got ("ip:port answer") or "timeout".
SAME_PORT_UDP = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(3)
out = []
for t in sys.argv[2:]:
    ip, port = t.split(":")
    s.sendto(b"x", (ip, int(port)))
    try:
        d, a = s.recvfrom(100); out.append("%s:%d %s" % (a[0], a[1], d.decode()))
    except OSError:
        out.append("timeout")
print(json.dumps(out))
"""


def same_port_udp(pod: Pod, targets: list[str], port: int = 40124) -> list[str]:
    return json.loads(pod.run("python3", "-c", SAME_PORT_UDP, str(port), *targets, timeout=120).stdout)


def test_a_reused_client_port_switches_between_pod_ip_and_clusterip(topo: Topology, datapath, servers) -> None:
    """The flow-table entries of a reset connection stay until they are idle: the next connection
    from the same port, to the ClusterIP after the pod IP and back, must not inherit them (it did:
    its SYN-ACK came back untranslated, or translated when it should not be, and was reset).
    The same for UDP, and for a frontend deleted and given again."""
    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(b)]))
    targets = [f"{b.ip}:8080", f"{VIP}:80"] * 2
    assert same_port_connects(a, targets) == expected_answers(a.ip, targets)
    # UDP has no opening packet: datagrams sent straight to the backend from the port a per-packet
    # translation used got their answers rewritten to the ClusterIP by its reverse entry
    udp = frontend(80, "UDP", [be(b, proto="UDP")])
    datapath.upsert_service(udp)
    targets = [f"{VIP}:80", f"{b.ip}:8080"] * 2
    assert same_port_udp(a, targets) == expected_answers(a.ip, targets)
    # a deleted frontend forgets its UDP translations: the same ClusterIP:port given again (the
    # Service recreated, another one allocated the freed address) must not go on to the old backend
    assert same_port_udp(a, [f"{VIP}:80"], 40125) == [f"{VIP}:80 b@{a.ip}"]
    datapath.delete_service(udp.key)
    datapath.upsert_service(frontend(80, "UDP", [be(c, proto="UDP")]))
    assert same_port_udp(a, [f"{VIP}:80"], 40125) == [f"{VIP}:80 c@{a.ip}"]


@pytest.mark.long  # its own datapath (another map size): a compile of its own
def test_service_maps_full_fail_closed_counted_and_recover(topo: Topology, servers) -> None:
    """bpf.serviceMapSize 16 (64 backend slots), filled by one frontend of 64 backends: a frontend
    whose backends do not fit gets an entry that refuses its connections (SERVICE_MAP_FULL, never
    an untranslated or half-written one); with the services map full too, the frontend without an
    entry is refused by its serviceCIDR address; both are retried and served once there is room."""
    from novanet_ebpf_policy.services import ServiceMapsFull

    from tests.bpf.conftest import started_datapath

    a, b = topo.pods["a"], servers["b"]
    filler = [ServiceBackend(ip=f"198.18.0.{i}", port=80, protocol="TCP") for i in range(64)]
    with started_datapath(topo, serviceMapSize=16) as dp:
        fill = ServiceFrontend(key="t/fill:81/TCP", namespace="t", name="fill", port_name="", protocol="TCP",
                               ip="10.96.100.9", port=81, kind="ClusterIP", backends=filler)
        dp.upsert_service(fill)
        before = dp.drop_counters()["SERVICE_MAP_FULL"]
        fe = frontend(80, "TCP", [be(b)])
        with pytest.raises(ServiceMapsFull, match="t/web:80/TCP"):
            dp.upsert_service(fe)
        assert client(a, 80, 1, "tcp")["errors"] == ["ConnectionRefusedError:111"]  # per packet
        assert client(a, 80, 1, "tcp", cgroup=topo.cgroup)["errors"] == ["ConnectionRefusedError:111"]
        # the services map (16) full as well: 14 more frontends without backends
        empty = [ServiceFrontend(key=f"t/e{i}:82/TCP", namespace="t", name=f"e{i}", port_name="", protocol="TCP",
                                 ip=f"10.96.101.{i}", port=82, kind="ClusterIP", backends=[]) for i in range(14)]
        for e in empty:
            dp.upsert_service(e)
        udp = ServiceFrontend(key="t/dns:53/UDP", namespace="t", name="dns", port_name="", protocol="UDP",
                              ip="10.96.100.10", port=53, kind="ClusterIP", backends=[be(b, 8080, "UDP")])
        with pytest.raises(ServiceMapsFull, match="t/dns:53/UDP"):
            dp.upsert_service(udp)
        assert client(a, 53, 1, "udp-connected", ip="10.96.100.10")["errors"] == ["ConnectionRefusedError:111"]
        maps = dp.service_status()["maps"]
        assert maps["failedClosed"] == ["t/dns:53/UDP", fe.key] and maps["withoutEntry"] == ["t/dns:53/UDP"]
        assert dp.drop_counters()["SERVICE_MAP_FULL"] - before >= 3
        for e in [fill, *empty]:
            dp.delete_service(e.key)
        deadline = time.monotonic() + 30  # retried every 2 s
        while dp.service_status()["maps"]["failedClosed"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dp.service_status()["maps"]["failedClosed"] == []
        assert client(a, 80, 2, "tcp")["answers"] == ["b", "b"]
        assert client(a, 53, 1, "udp", ip="10.96.100.10")["answers"] == ["b"]


# ------------------------------------------------------------------ kube-proxy compatibility


@pytest.fixture
def kp_datapath(topo: Topology) -> Iterator[object]:
    """kubeProxyReplacement: false, with a kube-proxy style DNAT for VIP:80 -> b:8080 in the node
    netns (PREROUTING -> KUBE-SERVICES), and a FORWARD counter for each direction of b:8080."""
    from novanet_ebpf_policy.backend import EbpfDatapath

    from novanet_core.backends import BackendContext
    from novanet_core.bpf.netns import netns
    from novanet_core.config.models import NovaNetConfig

    b = topo.pods["b"]
    rules = f"""*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d {VIP}/32 -p tcp --dport 80 -j DNAT --to-destination {b.ip}:8080
-A KUBE-SERVICES -d {VIP}/32 -p udp --dport 80 -j DNAT --to-destination {b.ip}:8080
COMMIT
*filter
-A FORWARD -s {b.ip}/32 -p tcp --sport 8080
-A FORWARD -d {b.ip}/32 -p tcp --dport 8080
COMMIT
"""
    sh("nsenter", f"--net=/run/netns/{topo.node}", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    subprocess.run(["nsenter", f"--net=/run/netns/{topo.node}", "iptables-restore"], input=rules, text=True,
                   check=True)
    cfg = NovaNetConfig.model_validate({**topo.config(), "kubeProxyReplacement": False})
    with netns(topo.node):
        dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
        dp.start()
        try:
            dp.configure(topo.settings())
            for p in topo.pods.values():
                dp.upsert_endpoint(p.endpoint(topo.gateway))
            yield dp
        finally:
            dp.stop()


def forward_counts(topo: Topology) -> tuple[int, int]:
    """Packets of the two FORWARD counter rules (from b:8080, to b:8080)."""
    out = sh("nsenter", f"--net=/run/netns/{topo.node}", "iptables", "-t", "filter", "-L", "FORWARD", "-n", "-v",
             "-x").stdout.splitlines()[2:]
    return int(out[0].split()[0]), int(out[1].split()[0])


def test_kube_proxy_dnat_same_node(topo: Topology, kp_datapath) -> None:
    """The reply of a kube-proxy-translated connection crosses the node's stack (conntrack reverses
    the DNAT); ordinary pod-to-pod traffic to the same backend port still bypasses it."""
    a, b = topo.pods["a"], topo.pods["b"]
    srv = b.popen("python3", "-c", SERVER, "b", "8080")
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        direct = client(a, 8080, 5, "tcp", ip=b.ip)
        assert direct["errors"] == [] and set(direct["answers"]) == {"b"}
        assert forward_counts(topo) == (0, 0)  # redirect_peer both ways: never forwarded by the stack
        assert kp_datapath.list_services() == []  # kube-proxy translates: nothing of ours
        tcp = client(a, 80, 5, "tcp")
        assert tcp["errors"] == [] and set(tcp["answers"]) == {"b"}
        assert set(tcp["peers"]) == {f"{VIP}:80"}
        udp = client(a, 80, 5, "udp")
        assert udp["errors"] == [] and set(udp["peers"]) == {f"{VIP}:80"}  # reply source de-NATed
        replies, requests = forward_counts(topo)
        assert replies > 0 and requests > 0  # both directions of the translated flows on the stack
        # the socket-level hooks are not attached without kubeProxyReplacement
        assert kp_datapath.service_status()["links"] == []
    finally:
        srv.kill()
        srv.wait()


def test_kube_proxy_dnat_after_a_direct_connection_from_the_same_port(topo: Topology, kp_datapath) -> None:
    """A direct connection leaves flow-table entries without VIA_STACK; kube-proxy's DNATed one
    from the same client port must still send its replies through the stack's conntrack."""
    a, b = topo.pods["a"], topo.pods["b"]
    srv = b.popen("python3", "-c", SERVER, "b", "8080")
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        targets = [f"{b.ip}:8080", f"{VIP}:80"] * 2
        assert same_port_connects(a, targets) == expected_answers(a.ip, targets)
    finally:
        srv.kill()
        srv.wait()


# ------------------------------------------------------------------ NodePort from outside the node

NODEPORT = 30080


@pytest.fixture
def outside(topo: Topology) -> Iterator[str]:
    """A netns outside the node on an "underlay" veth (node side 172.31.252.1, outside .2); the
    node IP is routed through it, like a client on the node's network."""
    ext, node_if = f"nvbx{topo.uid}", f"nvu{topo.uid}"
    sh("ip", "netns", "add", ext)
    try:
        sh("ip", "-n", ext, "link", "set", "lo", "up")
        sh("ip", "link", "add", node_if, "netns", topo.node, "type", "veth", "peer", "name", "eth0", "netns", ext)
        sh("ip", "-n", topo.node, "addr", "add", "172.31.252.1/24", "dev", node_if)
        sh("ip", "-n", topo.node, "link", "set", node_if, "up")
        sh("ip", "-n", ext, "addr", "add", "172.31.252.2/24", "dev", "eth0")
        sh("ip", "-n", ext, "link", "set", "eth0", "up")
        sh("ip", "-n", ext, "route", "add", f"{topo.node_ip}/32", "via", "172.31.252.1")
        # a Kubernetes node forwards (the FIB lookup of a NodePort reply needs it on the device)
        sh("nsenter", f"--net=/run/netns/{topo.node}", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield ext
    finally:
        sh("ip", "netns", "del", ext, check=False)


@pytest.fixture
def np_datapath(topo: Topology, outside: str) -> Iterator[object]:
    from novanet_ebpf_policy.backend import EbpfDatapath

    from novanet_core.backends import BackendContext
    from novanet_core.bpf.netns import netns
    from novanet_core.config.models import NovaNetConfig

    cfg = NovaNetConfig.model_validate({**topo.config(), "underlayInterface": f"nvu{topo.uid}"})
    with netns(topo.node):
        dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
        dp.start()
        try:
            dp.configure(topo.settings())
            for p in topo.pods.values():
                dp.upsert_endpoint(p.endpoint(topo.gateway))
            yield dp
        finally:
            dp.stop()


def nodeport(topo: Topology, proto: str, backends: list[ServiceBackend], local: bool = False) -> ServiceFrontend:
    return ServiceFrontend(key=f"t/web:{NODEPORT}/{proto}/nodeport", namespace="t", name="web", port_name="",
                           protocol=proto, ip=topo.node_ip, port=NODEPORT, kind="NodePort", backends=backends,
                           external_local=local)


@pytest.mark.parametrize("local", [False, True], ids=["cluster", "local"])
def test_nodeport_from_outside(topo: Topology, np_datapath, servers, outside: str, local: bool) -> None:
    b, c = servers["b"], servers["c"]
    np_datapath.upsert_service(nodeport(topo, "TCP", [be(b), be(c)], local))
    np_datapath.upsert_service(nodeport(topo, "UDP", [be(b, proto="UDP"), be(c, proto="UDP")], local))
    before = np_datapath.service_status()["translations"]["nodeport"]
    tcp = client(outside, NODEPORT, 10, "tcp", ip=topo.node_ip)
    udp = client(outside, NODEPORT, 10, "udp", ip=topo.node_ip)
    assert tcp["errors"] == udp["errors"] == []
    assert set(tcp["answers"]) | set(udp["answers"]) == {"b", "c"}
    assert set(tcp["peers"]) == set(udp["peers"]) == {f"{topo.node_ip}:{NODEPORT}"}
    # Cluster: SNAT to the node, the backend sees the node's address; Local: the client's
    seen = {"172.31.252.2"} if local else {topo.node_ip}
    assert set(tcp["seen"]) == set(udp["seen"]) == seen
    assert np_datapath.service_status()["translations"]["nodeport"] - before >= 20


def test_nodeport_without_backend_refused(topo: Topology, np_datapath, outside: str) -> None:
    np_datapath.upsert_service(nodeport(topo, "TCP", []))
    np_datapath.upsert_service(nodeport(topo, "UDP", []))
    tcp = client(outside, NODEPORT, 2, "tcp", ip=topo.node_ip)
    udp = client(outside, NODEPORT, 2, "udp-connected", ip=topo.node_ip)
    assert tcp["errors"] == udp["errors"] == ["ConnectionRefusedError:111"] * 2


# ------------------------------------------------------------------ backend selection semantics

# One TCP connection: prints the backend's name, then on each stdin line sends it and prints
# the echo (or the error), so a test can check the connection still works after a change.
HOLD = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.recv(100).decode().partition("@")[0], flush=True)
for line in sys.stdin:
    try:
        c.sendall(line.strip().encode()); print(c.recv(100).decode(), flush=True)
    except OSError as e:
        print("error:" + type(e).__name__, flush=True)
"""


@pytest.mark.parametrize("cgroup", [False, True], ids=["packet", "socket"])
def test_terminating_backend_finishes_its_connections(topo: Topology, datapath, servers, cgroup: bool) -> None:
    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(b), be(c)]))
    argv = ["nsenter", f"--net=/run/netns/{a.ns}", "python3", "-c", HOLD, VIP, "80"]
    if cgroup:
        from tests.support import cgroups

        argv = cgroups.argv_in(topo.cgroup, argv)
    held = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdin is not None and held.stdout is not None
        first = held.stdout.readline().strip()
        assert first in ("b", "c")
        other = "c" if first == "b" else "b"
        term = {"b": b, "c": c}[first]
        datapath.upsert_service(frontend(80, "TCP", [be(b, terminating=term is b, ready=term is not b),
                                                     be(c, terminating=term is c, ready=term is not c)]))
        fresh = client(a, 80, 10, "tcp", cgroup=topo.cgroup if cgroup else None)
        assert fresh["errors"] == [] and set(fresh["answers"]) == {other}  # no new connection to it
        held.stdin.write("still-there\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "still-there"  # ... but its own connection goes on
    finally:
        held.kill()
        held.wait()


@pytest.mark.parametrize("cgroup", [False, True], ids=["packet", "socket"])
def test_session_affinity_pins_a_client(topo: Topology, datapath, servers, cgroup: bool) -> None:
    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    cg = topo.cgroup if cgroup else None
    datapath.upsert_service(frontend(80, "TCP", [be(b), be(c)], affinity_timeout=60))
    got = client(a, 80, 20, "tcp", cgroup=cg)
    assert got["errors"] == [] and len(set(got["answers"])) == 1  # one backend for every connection
    pinned = got["answers"][0]
    # the pinned backend starts terminating: the client moves to the other one, and stays there
    datapath.upsert_service(frontend(80, "TCP", [be(b, terminating=pinned == "b", ready=pinned != "b"),
                                                 be(c, terminating=pinned == "c", ready=pinned != "c")],
                                     affinity_timeout=60))
    moved = client(a, 80, 10, "tcp", cgroup=cg)
    assert moved["errors"] == [] and set(moved["answers"]) == {"c" if pinned == "b" else "b"}
    datapath.upsert_service(frontend(80, "TCP", [be(b), be(c)], affinity_timeout=60))  # both ready again
    back = client(a, 80, 10, "tcp", cgroup=cg)
    assert set(back["answers"]) == set(moved["answers"])  # pinned to where it moved


def test_hairpin_backend_reaches_itself(topo: Topology, datapath, servers) -> None:
    b = servers["b"]
    datapath.upsert_service(frontend(80, "TCP", [be(b)]))
    datapath.upsert_service(frontend(80, "UDP", [be(b, proto="UDP")]))
    for cg in (None, topo.cgroup):
        tcp = client(b, 80, 3, "tcp", cgroup=cg)
        udp = client(b, 80, 3, "udp", cgroup=cg)
        assert tcp["errors"] == udp["errors"] == []
        assert set(tcp["answers"]) == set(udp["answers"]) == {"b"}
        assert set(tcp["peers"]) == set(udp["peers"]) == {f"{VIP}:80"}
    # per packet the pod must not see its own address as the source: the frontend's stands in
    assert set(client(b, 80, 1, "tcp")["seen"]) == {VIP}


def test_policy_decides_on_the_translated_packet(topo: Topology, datapath, servers) -> None:
    """A deny for the backend's identity on the target port applies to Service traffic; one on
    the Service port does not (the packet never carries it past the translation)."""
    a, c = topo.pods["a"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(c)]))
    datapath.upsert_policy({"src_identity": a.identity, "dst_identity": c.identity, "protocol": "tcp",
                            "dst_port": 80, "action": "deny"})
    assert client(a, 80, 1, "tcp")["answers"] == ["c"]
    datapath.upsert_policy({"src_identity": a.identity, "dst_identity": c.identity, "protocol": "tcp",
                            "dst_port": 8080, "action": "deny"})
    before = datapath.drop_counters()["POLICY_DENY_RULE"]
    for cg in (None, topo.cgroup):
        got = client(a, 80, 1, "tcp", cgroup=cg)
        assert got["answers"] == [] and got["errors"] == ["TimeoutError:None"]
    assert datapath.drop_counters()["POLICY_DENY_RULE"] > before


# SCTP (no SCTP sockets in this kernel): crafted packets through raw sockets, as the lab's probes.
# "recv": wait for one SCTP packet, print {src, sport, dport, crc_ok}, then (with a reply port)
# answer it with a packet from reply_port back to its source port. "send": send one to ip:port
# from sport, then wait for the answer and print it the same way.
SCTP = r"""
import json, select, socket, struct, sys
from novanet_lab.sctp import crc32c, init_packet
def parse(pkt):
    ihl = (pkt[0] & 15) * 4
    sc = bytearray(pkt[ihl:])
    sport, dport = struct.unpack_from("!HH", sc)
    (crc,) = struct.unpack_from("<I", sc, 8)
    sc[8:12] = b"\0\0\0\0"
    return {"src": socket.inet_ntoa(pkt[12:16]), "sport": sport, "dport": dport, "crc_ok": crc == crc32c(bytes(sc))}
def packet(sport, dport, tag, pad):
    # an INIT plus zero padding (so the CRC covers more than the chunk), CRC over all of it
    p = bytearray(init_packet(sport, dport, tag) + bytes(pad))
    p[8:12] = b"\0\0\0\0"
    p[8:12] = struct.pack("<I", crc32c(bytes(p)))
    return bytes(p)
def wait(s):
    # a bound, not a delay: returns with the first packet (the peer's interpreter may take
    # seconds to start on a loaded machine)
    if not select.select([s], [], [], 60)[0]:
        return None
    return parse(s.recv(65535))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
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


def test_sctp_per_packet_both_ways(topo: Topology, datapath) -> None:
    """SCTP never meets a socket hook: the per-packet path translates it, ports and CRC32c included."""
    import sys

    a, b = topo.pods["a"], topo.pods["b"]
    datapath.upsert_service(frontend(80, "SCTP", [be(b, port=8080, proto="SCTP")]))
    rx = b.popen(sys.executable, "-c", SCTP, "recv", "8080")
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        out = a.run(sys.executable, "-c", SCTP, "send", VIP, "80", "40001", timeout=90).stdout
        seen_by_backend = json.loads(rx.stdout.readline())
        assert seen_by_backend == {"src": a.ip, "sport": 40001, "dport": 8080, "crc_ok": True}
        # the backend's answer comes back as from the frontend, CRC still right
        assert json.loads(out) == {"src": VIP, "sport": 80, "dport": 40001, "crc_ok": True}
    finally:
        rx.kill()
        rx.wait()


def egress_only_to(pod: Pod, peer: Pod, port: int) -> object:
    """Compiled policy: ``pod``'s egress isolated, allowed to ``peer``'s identity on TCP ``port``
    (what the guide's allow-dns is for the kube-dns pods and port 53)."""
    from novanet_core.policy.compiled import DirectionPolicy, EndpointPolicy, IdentityPeer, PortRange, Rule

    rule = Rule(IdentityPeer(frozenset({peer.identity})), (PortRange("TCP", port, port),), "t/allow", "egress[0]")
    return EndpointPolicy(f"t/{pod.name}", pod.identity, pod.ip, "n", DirectionPolicy(False),
                          DirectionPolicy(True, (rule,), ("t/allow",)))


def test_egress_policy_admits_the_clusterip_of_an_allowed_backend(topo: Topology, datapath, servers) -> None:
    a, b, c = topo.pods["a"], servers["b"], servers["c"]
    datapath.upsert_service(frontend(80, "TCP", [be(b)]))
    datapath.apply_policy([egress_only_to(a, b, 8080)])
    for cg in (None, topo.cgroup):
        assert client(a, 80, 2, "tcp", cgroup=cg)["answers"] == ["b", "b"]
    assert client(a, 8080, 1, "tcp", ip=c.ip)["errors"] == ["TimeoutError:None"]  # the isolation holds


def test_kube_proxy_egress_policy_decided_after_the_dnat(topo: Topology, kp_datapath) -> None:
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    kp_datapath.configure(topo.settings())
    srv = b.popen("python3", "-c", SERVER, "b", "8080")
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        kp_datapath.apply_policy([egress_only_to(a, b, 8080)])
        assert client(a, 80, 2, "tcp")["answers"] == ["b", "b"]  # VIP -> b:8080 by kube-proxy: allowed
        assert client(a, 8080, 1, "tcp", ip=c.ip)["errors"] == ["TimeoutError:None"]
    finally:
        srv.kill()
        srv.wait()
