"""IPv6 Services through the eBPF datapath in a 2-node dual-stack lab (VXLAN, its BPF programs
carrying IPv6 between the nodes over the IPv4 underlay): the client's sockets are in the node's
cgroup (``novanet lab exec``), so an IPv6 ClusterIP is translated by the connect6/sendmsg6 hooks.

Pods: x/a (client) and x/d on node-1, x/b on node-2; x/b and x/d serve TCP and UDP 80. Services
from the lab spec (the lab allocates the ClusterIPs and derives the per-family EndpointSlices):
``web`` RequireDualStack NodePort, ``web6`` IPv6 only, ``none6`` IPv6 only with no endpoint,
``web6l`` an IPv6 NodePort with externalTrafficPolicy Local, ``none6np`` an IPv6 NodePort with no
endpoint. A client on the underlay (the lab's underlay netns) reaching node-1's IPv6 address on a
nodePort is translated per packet by nv_from_underlay; a process outside the cgroup (a bare
nsenter into the pod) reaching an IPv6 ClusterIP by nv_from_pod6_prog.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from tests.overlay.helpers import _stream, dataplane, drops, wait_for
from tests.services_datapath.test_services_lab import CLIENT, from_pod, run_client, translations
from tests.support.lab import LabUnderTest

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.lab,
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.long,
]

PORTS = [{"name": "tcp", "port": 80, "protocol": "TCP"}, {"name": "udp", "port": 80, "protocol": "UDP"}]
PLACEMENT = {"x/a": "node-1", "x/d": "node-1", "x/b": "node-2"}
NODEPORT = 30086
NODEPORT_LOCAL = 30087
NODEPORT_NONE = 30088


def _svc(name: str, selector: str, **spec: Any) -> dict[str, Any]:
    ports = [{"name": p["name"], "port": 80, "targetPort": 80, "protocol": p["protocol"]} for p in PORTS]
    return {"name": name, "namespace": "x", "selector": {"app": selector}, "ports": ports, **spec}


def spec() -> dict[str, Any]:
    web = _svc("web", "web", type="NodePort", ipFamilyPolicy="RequireDualStack")
    local = _svc("web6l", "web", type="NodePort", ipFamilies=["IPv6"], externalTrafficPolicy="Local")
    none = _svc("none6np", "nothing", type="NodePort", ipFamilies=["IPv6"])
    for svc, port in ((web, NODEPORT), (local, NODEPORT_LOCAL), (none, NODEPORT_NONE)):
        for p in svc["ports"]:
            p["nodePort"] = port
    return {
        "cluster": {
            "clusterCIDR": "10.42.0.0/16,fd00:42::/48",
            "serviceCIDR": "10.96.0.0/12,fd00:96::/108",
            "datapath": "ebpf",
            "kubeProxyReplacement": True,
            "routingMode": "overlay",
            "tunnelProtocol": "vxlan",
            "policy": {"defaultDeny": False},
        },
        "underlay": {"family": "dual", "mtu": 1500},
        "nodes": [{"name": "node-1"}, {"name": "node-2"}],
        "namespaces": [{"name": "x", "labels": {"ns": "x"}}],
        "pods": [
            {
                "name": k.split("/")[1],
                "namespace": "x",
                "node": n,
                "ports": PORTS,
                "labels": {"app": "client" if k == "x/a" else "web"},
            }
            for k, n in PLACEMENT.items()
        ],
        "services": [
            web,
            _svc("web6", "web", ipFamilies=["IPv6"]),
            _svc("none6", "nothing", ipFamilies=["IPv6"]),
            local,
            none,
        ],
    }


@pytest.fixture(scope="module")
def lab6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(spec(), tmp_path_factory.mktemp("svc6"))
    try:
        lab.up()
        # web: 2 ClusterIP + 2 NodePort per family; web6, none6: 2 ClusterIP each; web6l, none6np:
        # 2 ClusterIP + 2 NodePort each
        assert wait_for(lambda: len(dataplane(lab, "node-1", "dp.service.list")) == 20, timeout=60), (
            dataplane(lab, "node-1", "dp.service.list")
        )
        yield lab
    finally:
        lab.down()


def cluster_ip(lab: LabUnderTest, name: str, version: int) -> str:
    s = next(s for s in lab.status()["services"] if s["name"] == name)
    return next(ip for ip in s["clusterIPs"] if ipaddress.ip_address(ip).version == version)


def node_ip(lab: LabUnderTest, node: str, version: int) -> str:
    row = next(n for n in lab.status()["nodes"] if n["name"] == node)
    return next(ip for ip in row["ips"] if ipaddress.ip_address(ip).version == version)


def test_ipv6_clusterip_reaches_backends_on_both_nodes_and_dual_stack_in_each_family(
    lab6: LabUnderTest,
) -> None:
    before = translations(lab6)
    for name, version in (("web", 6), ("web", 4), ("web6", 6)):
        vip = cluster_ip(lab6, name, version)
        for proto in ("tcp", "udp"):
            got = from_pod(lab6, "x/a", vip, 80, 20, proto, socket_level=True)
            assert got["errors"] == [], (name, vip, proto, got)
            assert set(got["answers"]) == {"x/b", "x/d"}, (vip, proto)  # node-2 and node-1
            assert set(got["peers"]) == {f"{vip}:80"}  # the socket saw the ClusterIP only
    after = translations(lab6)
    assert after["socket6"] - before["socket6"] == 80 and after["socket"] - before["socket"] == 40
    listed = lab6.ctl("service", "list")
    v6 = {(s["ip"], s["kind"]) for s in listed if s["family"] == "IPv6"}
    assert (cluster_ip(lab6, "web6", 6), "ClusterIP") in v6 and (node_ip(lab6, "node-1", 6), "NodePort") in v6


def test_ipv6_service_without_endpoints_is_refused_at_once(lab6: LabUnderTest) -> None:
    vip = cluster_ip(lab6, "none6", 6)
    before = drops(lab6, "node-1").get("NO_SERVICE_BACKEND", 0)
    for proto in ("tcp", "udp"):
        got = from_pod(lab6, "x/a", vip, 80, 2, proto, socket_level=True)
        assert got["errors"] == ["ConnectionRefusedError:111"] * 2, got
    assert drops(lab6, "node-1").get("NO_SERVICE_BACKEND", 0) - before == 4


def test_ipv6_nodeport_from_a_pod(lab6: LabUnderTest) -> None:
    """A pod reaching its own node's IPv6 address on the nodePort is translated at socket level;
    another node's IPv6 nodePort by that node's nv_from_underlay."""
    for node in ("node-1", "node-2"):
        ip = node_ip(lab6, node, 6)
        for proto in ("tcp", "udp"):
            got = from_pod(lab6, "x/a", ip, NODEPORT, 20, proto, socket_level=True)
            assert got["errors"] == [] and set(got["answers"]) == {"x/b", "x/d"}, (node, proto, got)
            assert set(got["peers"]) == {f"{ip}:{NODEPORT}"}


def from_underlay(lab: LabUnderTest, ip: str, port: int, n: int, proto: str) -> dict[str, Any]:
    under = f"--net={lab.paths.netns_path(lab.paths.underlay_netns)}"
    return run_client(lab, ["nsenter", under, "python3", CLIENT, ip, str(port), str(n), proto])


def sources_seen(lab: LabUnderTest, node: str, pod: str) -> set[str]:
    """The source addresses of the IPv6 TCP connections to ``pod``'s port 80 that node admitted."""
    row = next(p for p in lab.status()["pods"] if f"{p['namespace']}/{p['name']}" == pod)
    ip6 = next(ip for ip in row["ips"] if ":" in ip)
    return {
        e["src_ip"]
        for e in _stream(lab, node, "ebpf.flows", {"limit": 4096, "filter": {"port": 80}})
        if e["verdict"] == "ALLOW" and e["protocol"] == 6 and e["dst_ip"] == ip6 and e["dst_port"] == 80
    }


def test_ipv6_nodeport_from_the_underlay_cluster_and_local(lab6: LabUnderTest) -> None:
    """Cluster: backends on both nodes, SNATed to node-1's IPv6 address; Local: node-1's own
    backend only, with the client's address; both counted as IPv6 nodeport translations."""
    ip = node_ip(lab6, "node-1", 6)
    client = next(a for a in lab6.status()["underlay"]["gateways"] if ":" in a)
    before = translations(lab6)["nodeport6"]
    for proto in ("tcp", "udp"):
        got = from_underlay(lab6, ip, NODEPORT, 30, proto)
        assert got["errors"] == [] and set(got["answers"]) == {"x/b", "x/d"}, (proto, got)
        assert set(got["peers"]) == {f"{ip}:{NODEPORT}"}
    assert sources_seen(lab6, "node-2", "x/b") == {ip}  # the remote backend saw node-1's address
    for proto in ("tcp", "udp"):
        got = from_underlay(lab6, ip, NODEPORT_LOCAL, 10, proto)
        assert got["errors"] == [] and set(got["answers"]) == {"x/d"}, (proto, got)
        assert set(got["peers"]) == {f"{ip}:{NODEPORT_LOCAL}"}
    assert client in sources_seen(lab6, "node-1", "x/d")  # Local kept the client's address
    assert translations(lab6)["nodeport6"] - before >= 80


def test_ipv6_nodeport_without_endpoints_is_refused_and_counted(lab6: LabUnderTest) -> None:
    ip = node_ip(lab6, "node-1", 6)
    before = drops(lab6, "node-1").get("NO_SERVICE_BACKEND", 0)
    for proto in ("tcp", "udp-connected"):
        got = from_underlay(lab6, ip, NODEPORT_NONE, 2, proto)
        assert got["errors"] == ["ConnectionRefusedError:111"] * 2, got
    assert drops(lab6, "node-1").get("NO_SERVICE_BACKEND", 0) - before == 4
    view = lab6.ctl("drops")  # novanetctl's drop view: the refusals, from the underlay, by reason
    refused = [
        e for e in view["events"] if e.get("drop_reason_name") == "NO_SERVICE_BACKEND" and e["dst_ip"] == ip
    ]
    assert len(refused) >= 4 and view["drops"]["NO_SERVICE_BACKEND"] >= 4, view


def test_ipv6_clusterip_per_packet_from_outside_the_cgroup(lab6: LabUnderTest) -> None:
    before = translations(lab6)
    vip = cluster_ip(lab6, "web6", 6)
    for proto in ("tcp", "udp"):
        got = from_pod(lab6, "x/a", vip, 80, 20, proto, socket_level=False)
        assert got["errors"] == [] and set(got["answers"]) == {"x/b", "x/d"}, (proto, got)
        assert set(got["peers"]) == {f"{vip}:80"}
    after = translations(lab6)
    assert after["packet6"] - before["packet6"] == 40 and after["socket6"] == before["socket6"]


def test_lab_probe_to_service_probes_each_family(lab6: LabUnderTest) -> None:
    res = lab6.probe("--to-service", "x/web", "--to-service", "x/web6", "--from", "x/a")
    got = {(r["to"], r["protocol"], r["family"]): (r["allowed"], r.get("backend")) for r in res}
    assert set(got) == {
        (f"svc:x/{n}", p, f) for n, f in (("web", 4), ("web", 6), ("web6", 6)) for p in ("TCP", "UDP")
    }
    assert all(ok and backend in ("x/b", "x/d") for ok, backend in got.values()), got
    with pytest.raises(AssertionError, match="the Services have no address of IPv4"):
        lab6.probe("--to-service", "x/web6", "--family", "4")
