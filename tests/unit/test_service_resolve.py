"""The agent's per-node Service resolution: what a datapath gets for each node."""

from __future__ import annotations

from novanet_core.services.resolve import compat_backends, frontends_for
from novanet_core.state.model import ClusterState, parse_object


def svc(name="web", ns="shop", **spec) -> dict:
    base = {"selector": {"app": name}, "clusterIP": "10.96.0.20",
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    base.update(spec)
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": base}


def ep(ip, node, pod=None, **cond) -> dict:
    e = {"addresses": [ip], "nodeName": node, "conditions": cond}
    if pod:
        e["targetRef"] = {"kind": "Pod", "namespace": "shop", "name": pod}
    return e


def eps(name, service, endpoints, ports=None, ns="shop") -> dict:
    return {"kind": "EndpointSlice", "metadata": {"name": name, "namespace": ns,
                                                  "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports if ports is not None else [{"name": "http", "port": 8080}],
            "endpoints": endpoints}


def pod(name, node, ports) -> dict:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]}}


def state(*objs) -> ClusterState:
    st = ClusterState()
    for o in objs:
        p = parse_object(o)
        st.table(type(p).__name__)[p.key] = p
    return st


def fronts(st: ClusterState, node="node-1", node_ip="172.30.0.2"):
    out = []
    for s in st.services.values():
        out.extend(frontends_for(st, s, node, node_ip))
    return {fe.key: fe for fe in out}


def test_cluster_ip_lists_every_backend_with_local_flags():
    st = state(svc(), eps("web-1", "web", [ep("10.42.1.7", "node-2"), ep("10.42.0.5", "node-1")]))
    fe = fronts(st)["shop/web:http/TCP"]
    assert (fe.ip, fe.port, fe.kind, fe.protocol, fe.port_name) == ("10.96.0.20", 80, "ClusterIP", "TCP", "http")
    assert [(b.ip, b.port, b.node_name, b.local) for b in fe.backends] == [
        ("10.42.0.5", 8080, "node-1", True), ("10.42.1.7", 8080, "node-2", False)]
    assert fronts(st, node="node-2")["shop/web:http/TCP"].backends[1].local


def test_named_target_port_resolves_per_pod_when_the_slice_gives_no_number():
    st = state(svc(), eps("web-1", "web", [ep("10.42.0.5", "node-1", "a"), ep("10.42.0.6", "node-1", "b"),
                                           ep("10.42.0.7", "node-1", "c")], ports=[{"name": "http"}]),
               pod("a", "node-1", [{"name": "http", "containerPort": 8080}]),
               pod("b", "node-1", [{"name": "http", "containerPort": 9090}]),
               pod("c", "node-1", [{"name": "http", "containerPort": 8080, "protocol": "UDP"}]))  # wrong protocol
    fe = fronts(st)["shop/web:http/TCP"]
    assert [(b.ip, b.port) for b in fe.backends] == [("10.42.0.5", 8080), ("10.42.0.6", 9090)]
    numbered = state(svc(ports=[{"name": "http", "port": 80, "targetPort": 8081}]),
                     eps("web-1", "web", [ep("10.42.0.5", "node-1")], ports=[{"name": "http"}]))
    assert [b.port for b in fronts(numbered)["shop/web:http/TCP"].backends] == [8081]


def test_slice_ports_match_by_name_and_protocol():
    st = state(svc(ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),
               eps("web-1", "web", [ep("10.42.0.5", "node-1")], ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}]))
    f = fronts(st)
    assert [b.port for b in f["shop/web:dns/UDP"].backends] == [5353]
    assert f["shop/web:dns-tcp/TCP"].backends == []  # the slice does not serve this port


def test_internal_traffic_policy_local_keeps_only_this_nodes_backends():
    st = state(svc(internalTrafficPolicy="Local"),
               eps("web-1", "web", [ep("10.42.0.5", "node-1"), ep("10.42.1.7", "node-2")]))
    assert [b.ip for b in fronts(st)["shop/web:http/TCP"].backends] == ["10.42.0.5"]
    assert fronts(st, node="node-3")["shop/web:http/TCP"].backends == []


def test_node_port_frontends_and_external_traffic_policy():
    ports = [{"name": "http", "port": 80, "nodePort": 30080}]
    two = [ep("10.42.0.5", "node-1"), ep("10.42.1.7", "node-2")]
    cluster = fronts(state(svc(type="NodePort", ports=ports), eps("web-1", "web", two)))
    np = cluster["shop/web:http/TCP/nodeport"]
    assert (np.kind, np.ip, np.port, np.external_local) == ("NodePort", "172.30.0.2", 30080, False)
    assert len(np.backends) == 2 and len(cluster["shop/web:http/TCP"].backends) == 2
    local = fronts(state(svc(type="NodePort", ports=ports, externalTrafficPolicy="Local"), eps("web-1", "web", two)))
    assert local["shop/web:http/TCP/nodeport"].external_local
    assert [b.ip for b in local["shop/web:http/TCP/nodeport"].backends] == ["10.42.0.5"]
    assert len(local["shop/web:http/TCP"].backends) == 2  # ClusterIP traffic is internal: Cluster still


def test_terminating_and_not_ready_endpoints_are_flagged_and_duplicates_counted_once():
    st = state(svc(sessionAffinity="ClientIP"),
               eps("web-1", "web", [ep("10.42.0.5", "node-1", ready=False, serving=True, terminating=True),
                                    ep("10.42.0.6", "node-1", ready=False)]),
               eps("web-2", "web", [ep("10.42.0.6", "node-1"), ep("10.42.0.7", "node-1")]))
    fe = fronts(st)["shop/web:http/TCP"]
    assert fe.affinity_timeout == 10800
    assert [(b.ip, b.ready, b.serving, b.terminating, b.selectable) for b in fe.backends] == [
        ("10.42.0.5", False, True, True, False), ("10.42.0.6", True, True, False, True),
        ("10.42.0.7", True, True, False, True)]


def test_services_without_frontends():
    st = state(svc("headless", clusterIP="None"), eps("h-1", "headless", [ep("10.42.0.5", "node-1")]),
               svc("pending", clusterIP=None), svc("ext", type="ExternalName", externalName="db.example.com"))
    assert fronts(st) == {}


def eps6(name, service, endpoints) -> dict:
    return {**eps(name, service, endpoints), "addressType": "IPv6"}


def test_each_family_gets_its_frontends_from_its_own_slices():
    st = state(svc(clusterIP="10.96.0.20", clusterIPs=["10.96.0.20", "fd00:96::20"], ipFamilyPolicy="RequireDualStack",
                   ipFamilies=["IPv4", "IPv6"], type="NodePort",
                   ports=[{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]),
               eps("web-1", "web", [ep("10.42.0.5", "node-1")]),
               eps6("web-2", "web", [ep("fd00:42::5", "node-1"), ep("fd00:42:1::7", "node-2")]),
               svc("v6", clusterIP="fd00:96::21", ipFamilies=["IPv6"]),
               eps6("v6-1", "v6", [ep("fd00:42::8", "node-2")]))
    f = fronts(st, node_ip=["172.30.0.2", "fd00:30::2"])
    assert sorted(f) == ["shop/v6:http/TCP/IPv6", "shop/web:http/TCP", "shop/web:http/TCP/IPv6",
                         "shop/web:http/TCP/nodeport", "shop/web:http/TCP/nodeport/IPv6"]
    v4, v6 = f["shop/web:http/TCP"], f["shop/web:http/TCP/IPv6"]
    assert (v4.ip, [b.ip for b in v4.backends]) == ("10.96.0.20", ["10.42.0.5"])
    assert (v6.ip, [(b.ip, b.local) for b in v6.backends]) == ("fd00:96::20", [("fd00:42::5", True),
                                                                               ("fd00:42:1::7", False)])
    assert (f["shop/web:http/TCP/nodeport/IPv6"].ip, f["shop/web:http/TCP/nodeport"].ip) == ("fd00:30::2", "172.30.0.2")
    assert [b.ip for b in f["shop/v6:http/TCP/IPv6"].backends] == ["fd00:42::8"]
    # a node without an IPv6 address has no IPv6 NodePort frontend (its ClusterIP frontends stay)
    assert "shop/web:http/TCP/nodeport/IPv6" not in fronts(st) and "shop/web:http/TCP/IPv6" in fronts(st)


def test_slices_of_other_services_or_namespaces_do_not_mix():
    st = state(svc(), eps("web-1", "web", [ep("10.42.0.5", "node-1")]),
               eps("other", "web", [ep("10.42.0.9", "node-1")], ns="elsewhere"),
               eps("api-1", "api", [ep("10.42.0.8", "node-1")]))
    assert [b.ip for b in fronts(st)["shop/web:http/TCP"].backends] == ["10.42.0.5"]


def test_compat_backends_cover_every_proxied_service_once():
    st = state(svc(), svc("dns", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}], clusterIP="10.96.0.10"),
               svc("headless", clusterIP="None"),
               eps("web-1", "web", [ep("10.42.0.5", "node-1"), ep("10.42.1.7", "node-2")]),
               eps("web-2", "web", [ep("10.42.0.5", "node-1")]),
               eps("dns-1", "dns", [ep("10.42.1.3", "node-2")], ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
               eps("h-1", "headless", [ep("10.42.0.9", "node-1")]))
    assert [(b.ip, b.port, b.protocol) for b in compat_backends(st, "node-1")] == [
        ("10.42.0.5", 8080, "TCP"), ("10.42.1.3", 53, "UDP"), ("10.42.1.7", 8080, "TCP")]
