"""The lab's Services: spec checks, the API server's allocation, the EndpointSlice controller, apply -f."""

from __future__ import annotations

import pytest
from novanet_lab.errors import LabError
from novanet_lab.resources import parse_resources
from novanet_lab.services import controller
from novanet_lab.services.objects import Allocator, admit, static_band
from novanet_lab.spec import parse_spec

from novanet_core.state.model import ObjectError, parse_object

BASE = {"nodes": [{"name": "n1"}, {"name": "n2"}], "namespaces": [{"name": "x"}]}


def spec_with(*services, **cluster):
    return parse_spec({**BASE, "cluster": cluster, "services": list(services)})


def svc(name="web", **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "x"},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}


def test_spec_services_are_checked_by_the_agents_parser_with_their_index():
    ok = spec_with({"name": "web", "namespace": "x", "selector": {"app": "web"}, "ports": [{"port": 80}]})
    assert ok.services[0].to_object()["spec"] == {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    cases = [
        ({"name": "a", "namespace": "x", "ports": [{"port": 80, "nodePort": 30000}]},
         "services[0] (x/a).ports[0].nodePort: may not be used when type is 'ClusterIP'"),
        ({"name": "a", "namespace": "x", "ports": [{"port": 80, "protocol": "ICMP"}]},
         "services[0] (x/a).ports[0].protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
        ({"name": "a", "namespace": "x", "clusterIP": "192.168.0.1", "ports": [{"port": 80}]},
         "services[0] (x/a).clusterIP: 192.168.0.1 is not in serviceCIDR 10.96.0.0/12"),
        ({"name": "a", "namespace": "nope", "ports": [{"port": 80}]},
         "services[0] (nope/a).namespace: 'nope' is not declared under namespaces:"),
        ({"name": "a", "namespace": "x", "selector": {"app": "a"}}, "services[0] (x/a).ports: is required"),
        ({"name": "a", "namespace": "x", "color": "red"}, "services[0].color: unknown key"),
    ]
    for service, message in cases:
        with pytest.raises(LabError) as ei:
            spec_with(service)
        assert message in str(ei.value), str(ei.value)


def test_spec_cluster_service_keys():
    with pytest.raises(LabError, match="cluster.kubeProxy: iptables needs cluster.kubeProxyReplacement: false"):
        spec_with(kubeProxy="iptables")
    assert spec_with(kubeProxy="nftables", kubeProxyReplacement=False).cluster.kubeProxy == "nftables"
    with pytest.raises(LabError, match="cluster.serviceCIDR: 10.32.0.0/11 overlaps clusterCIDR"):
        spec_with(serviceCIDR="10.32.0.0/11")
    with pytest.raises(LabError, match="cluster.kubeProxy"):
        spec_with(kubeProxy="ipvs", kubeProxyReplacement=False)
    two = [{"name": n, "namespace": "x", "clusterIP": "10.96.0.10", "ports": [{"port": 53}]} for n in ("a", "b")]
    with pytest.raises(LabError, match=r"services\[1\] \(x/b\).clusterIP: 10.96.0.10 is already allocated to Service x/a"):
        spec_with(*two)


def test_allocation_follows_the_api_servers_bands():
    assert static_band(65534, 16, 256) == 256 and static_band(254, 16, 256) == 16
    alloc = Allocator("10.96.0.0/12", [])
    a = admit(svc("a"), None, alloc)
    b = admit(svc("b", clusterIP="10.96.0.10"), None, alloc)
    c = admit(svc("c"), None, alloc)
    # Automatic addresses come from above the static band; picked ones are taken as given.
    assert [o["spec"]["clusterIP"] for o in (a, b, c)] == ["10.96.1.1", "10.96.0.10", "10.96.1.2"]
    assert a["spec"]["clusterIPs"] == ["10.96.1.1"]
    np = admit(svc("np", type="NodePort", ports=[{"name": "http", "port": 80}, {"name": "x", "port": 81},
                                                    {"name": "y", "port": 82, "nodePort": 30000}]), None, alloc)
    assert [p["nodePort"] for p in np["spec"]["ports"]] == [30086, 30087, 30000]
    headless = admit(svc("h", clusterIP="None"), None, alloc)
    assert headless["spec"]["clusterIP"] == "None"
    ext = admit(svc("e", type="ExternalName", externalName="db.example.com", selector=None), None, alloc)
    assert "clusterIP" not in ext["spec"]


def test_updates_keep_allocations_and_refuse_clusterip_changes():
    alloc = Allocator("10.96.0.0/12", [])
    first = admit(svc(type="NodePort"), None, alloc)
    again = admit(svc(type="NodePort"), first, alloc)  # the user's manifest names neither
    assert again == first
    with pytest.raises(ObjectError, match="spec.clusterIP: field is immutable"):
        admit(svc(type="NodePort", clusterIP="10.96.5.5"), first, alloc)
    other = admit(svc("other", type="NodePort"), None, alloc)
    with pytest.raises(ObjectError, match=r"spec.ports\[0\].nodePort: 30086/TCP is already allocated to Service x/web"):
        admit(svc("other", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30086}]), other, alloc)
    with pytest.raises(ObjectError, match="is already allocated to Service x/web"):
        admit(svc("third", clusterIP=first["spec"]["clusterIP"]), None, alloc)


def test_clusterips_per_family_from_a_dual_stack_servicecidr():
    alloc = Allocator("10.96.0.0/12,fd00:96::/108", [])
    single = admit(svc("a"), None, alloc)
    assert single["spec"]["clusterIPs"] == ["10.96.1.1"]
    assert (single["spec"]["ipFamilies"], single["spec"]["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    dual = admit(svc("b", ipFamilyPolicy="PreferDualStack"), None, alloc)
    # IPv6's static band is 256 addresses too (a /108 has 2**20)
    assert dual["spec"]["clusterIPs"] == ["10.96.1.2", "fd00:96::101"]
    assert dual["spec"]["ipFamilies"] == ["IPv4", "IPv6"] and dual["spec"]["clusterIP"] == "10.96.1.2"
    v6 = admit(svc("c", ipFamilies=["IPv6"], clusterIP="fd00:96::a"), None, alloc)
    assert v6["spec"]["clusterIPs"] == ["fd00:96::a"] and v6["spec"]["ipFamilies"] == ["IPv6"]
    with pytest.raises(ObjectError, match=r"spec.clusterIP: fd00:96::a is already allocated to Service x/c"):
        admit(svc("d", clusterIP="fd00:96::a"), None, alloc)
    with pytest.raises(ObjectError, match=r"spec.clusterIPs\[1\]: fd00:97::1 is not in serviceCIDR fd00:96::/108"):
        admit(svc("d", ipFamilyPolicy="RequireDualStack", clusterIPs=["10.96.0.20", "fd00:97::1"]), None, alloc)
    assert "10.96.0.20" not in alloc.ips  # a refused Service leaves no allocation behind
    # an update to PreferDualStack adds the other family and keeps the primary address
    up = admit(svc("a", ipFamilyPolicy="PreferDualStack"), single, alloc)
    assert up["spec"]["clusterIPs"] == ["10.96.1.1", "fd00:96::102"]
    v4only = Allocator("10.96.0.0/12", [])
    assert admit(svc("p", ipFamilyPolicy="PreferDualStack"), None, v4only)["spec"]["clusterIPs"] == ["10.96.1.1"]
    with pytest.raises(ObjectError, match=r"spec.ipFamilyPolicy: RequireDualStack"):
        admit(svc("r", ipFamilyPolicy="RequireDualStack"), None, v4only)
    with pytest.raises(ObjectError, match=r"spec.ipFamilies\[0\]: IPv6 is not served"):
        admit(svc("r", ipFamilies=["IPv6"]), None, v4only)


def test_spec_servicecidr_takes_one_range_per_family():
    ok = spec_with({"name": "web", "namespace": "x", "selector": {"app": "web"}, "ports": [{"port": 80}],
                    "ipFamilyPolicy": "RequireDualStack"}, serviceCIDR=["fd00:96::/108", "10.96.0.0/12"])
    assert ok.cluster.serviceCIDR == "fd00:96::/108,10.96.0.0/12"
    with pytest.raises(LabError, match=r"serviceCIDR"):
        spec_with(serviceCIDR="10.96.0.0/12,10.97.0.0/16")
    with pytest.raises(LabError, match=r"services\[0\] \(x/web\).ipFamilyPolicy: RequireDualStack"):
        spec_with({"name": "web", "namespace": "x", "ports": [{"port": 80}], "ipFamilyPolicy": "RequireDualStack"})


def pod(name, labels, ip="10.42.0.5", node="n1", ports=None, ready=True, ns="x", ip6=None):
    obj = {"kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"nodeName": node, "containers": [{"ports": ports if ports is not None else
                                                       [{"name": "http", "containerPort": 8080}]}]},
           "status": {"podIP": ip or ip6, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if ip6:
        obj["status"]["podIPs"] = [{"ip": a} for a in (ip, ip6) if a]
    return parse_object(obj)


def test_controller_makes_slices_per_ip_family():
    s = parse_object(admit(svc(ipFamilyPolicy="PreferDualStack"), None, Allocator("10.96.0.0/12,fd00:96::/108", [])))
    pods = [pod("a", {"app": "web"}, "10.42.0.5", ip6="fd00:42::5"), pod("b", {"app": "web"}, "10.42.0.6"),
            pod("c", {"app": "web"}, None, ip6="fd00:42::7")]
    slices = controller.slices_for(s, pods)
    by_type = {sl["addressType"]: [(e["addresses"], e["targetRef"]["name"]) for e in sl["endpoints"]] for sl in slices}
    assert by_type == {"IPv4": [(["10.42.0.5"], "a"), (["10.42.0.6"], "b")],
                       "IPv6": [(["fd00:42::5"], "a"), (["fd00:42::7"], "c")]}
    assert len({sl["metadata"]["name"] for sl in slices}) == 2
    for sl in slices:
        parse_object(sl)
    v4 = parse_object(admit(svc(), None, Allocator("10.96.0.0/12,fd00:96::/108", [])))
    assert [sl["addressType"] for sl in controller.slices_for(v4, pods)] == ["IPv4"]
    v6 = parse_object(admit(svc(ipFamilies=["IPv6"]), None, Allocator("10.96.0.0/12,fd00:96::/108", [])))
    assert [[e["addresses"] for e in sl["endpoints"]] for sl in controller.slices_for(v6, pods)] == [
        [["fd00:42::5"], ["fd00:42::7"]]]


def test_controller_makes_the_slices_kube_controller_manager_would():
    s = parse_object(admit(svc(labels=None), None, Allocator("10.96.0.0/12", [])))
    pods = [pod("a", {"app": "web"}, "10.42.0.5"), pod("b", {"app": "web"}, "10.42.1.6", "n2", ready=False),
            pod("c", {"app": "web"}, "10.42.0.7", ports=[{"name": "http", "containerPort": 9090}]),
            pod("d", {"app": "web"}, "10.42.0.8", ports=[]),  # no such port: listed without it
            pod("e", {"app": "db"}, "10.42.0.9"), pod("f", {"app": "web"}, None), pod("g", {"app": "web"}, ns="y")]
    slices = controller.slices_for(s, pods)
    by_ports = {tuple(p["port"] for p in sl["ports"]): sl for sl in slices}
    assert set(by_ports) == {(8080,), (9090,), ()}
    main = by_ports[(8080,)]
    assert main["metadata"]["labels"] == {"kubernetes.io/service-name": "web",
                                          "endpointslice.kubernetes.io/managed-by": "novanet-lab"}
    assert main["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert [(e["addresses"], e["conditions"], e["nodeName"], e["targetRef"]["name"]) for e in main["endpoints"]] == [
        (["10.42.0.5"], {"ready": True, "serving": True, "terminating": False}, "n1", "a"),
        (["10.42.1.6"], {"ready": False, "serving": False, "terminating": False}, "n2", "b")]
    assert [e["targetRef"]["name"] for e in by_ports[()]["endpoints"]] == ["d"]
    for sl in slices:
        parse_object(sl)  # what the controller writes, the agents accept
    names = [sl["metadata"]["name"] for sl in slices]
    assert names == [sl["metadata"]["name"] for sl in controller.slices_for(s, pods)]  # stable
    pnra = parse_object(admit(svc(publishNotReadyAddresses=True), None, Allocator("10.96.0.0/12", [])))
    assert controller.slices_for(pnra, pods[1:2])[0]["endpoints"][0]["conditions"]["ready"] is True
    headless = parse_object(admit(svc(clusterIP="None"), None, Allocator("10.96.0.0/12", [])))
    assert controller.slices_for(headless, pods[:1])[0]["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    manual = parse_object(admit(svc(selector=None), None, Allocator("10.96.0.0/12", [])))
    assert controller.slices_for(manual, pods) == []


def test_controller_splits_at_100_endpoints():
    s = parse_object(admit(svc(), None, Allocator("10.96.0.0/12", [])))
    pods = [pod(f"p{i}", {"app": "web"}, f"10.42.{i // 200}.{i % 200 + 2}") for i in range(230)]
    assert [len(sl["endpoints"]) for sl in controller.slices_for(s, pods)] == [100, 100, 30]


def test_apply_takes_services_and_endpointslices():
    res = parse_resources("""
kind: Service
metadata: {name: web, namespace: x}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: m-1, namespace: x, labels: {kubernetes.io/service-name: m}}
addressType: IPv4
endpoints: [{addresses: [10.42.0.5]}]
""")
    assert [(r.kind, r.key, r.raw["apiVersion"]) for r in res] == [("Service", "x/web", "v1"),
                                                                   ("EndpointSlice", "x/m-1", "discovery.k8s.io/v1")]
    with pytest.raises(LabError) as ei:
        parse_resources("kind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, targetPort: 0.5}]}\n", "f.yaml")
    assert "f.yaml (document 1): Service web: spec.ports[0].targetPort:" in str(ei.value)
    notready = parse_resources("kind: Pod\nmetadata: {name: p, namespace: x}\nspec: {}\n"
                               "status: {conditions: [{type: Ready, status: 'False'}]}\n")
    assert notready[0].ready is False
    assert parse_resources("kind: Pod\nmetadata: {name: p, namespace: x}\nspec: {}\n")[0].ready is True


def test_controller_lists_a_dual_stack_pods_ipv4_address_and_no_ipv6_only_pod():
    """A SingleStack IPv4 Service's slices are addressType IPv4, whatever a pod's primary family."""
    s = parse_object(admit(svc(), None, Allocator("10.96.0.0/12", [])))
    dual = parse_object({"kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web"}},
                         "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
                         "status": {"podIP": "fd00:42::5", "podIPs": [{"ip": "fd00:42::5"}, {"ip": "10.42.0.5"}]}})
    only6 = pod("b", {"app": "web"}, "fd00:42::6")
    slices = controller.slices_for(s, [dual, only6])
    assert [e["addresses"] for sl in slices for e in sl["endpoints"]] == [["10.42.0.5"]]
