"""Service and EndpointSlice parsing: the API server's defaults, and bad objects named by field path."""

from __future__ import annotations

import copy

import pytest

from novanet_core.state.model import ObjectError, parse_object


def svc(**spec) -> dict:
    base = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": base}


def eps(**kw) -> dict:
    obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
           "endpoints": [{"addresses": ["10.42.0.5"], "nodeName": "node-1",
                          "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0"}}]}
    obj.update(kw)
    return obj


def test_service_defaults_follow_the_api_server():
    s = parse_object(svc(ports=[{"port": 53, "protocol": "UDP"}]))
    assert s.key == "shop/web" and s.type == "ClusterIP" and s.cluster_ip is None and not s.headless
    p = s.ports[0]
    assert (p.port, p.protocol, p.name, p.target_port, p.node_port) == (53, "UDP", "", 53, None)
    assert (s.session_affinity, s.affinity_timeout) == ("None", 0)
    assert (s.external_traffic_policy, s.internal_traffic_policy) == ("Cluster", "Cluster")
    a = parse_object(svc(sessionAffinity="ClientIP"))
    assert a.affinity_timeout == 10800
    b = parse_object(svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}}))
    assert b.affinity_timeout == 30


def test_service_kinds_and_fields():
    np = parse_object(svc(type="NodePort", clusterIP="10.96.0.30", externalTrafficPolicy="Local",
                          internalTrafficPolicy="Local", ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack",
                          ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                                 {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]))
    assert np.cluster_ip == "10.96.0.30" and np.cluster_ips == ("10.96.0.30",) and np.has_node_ports
    assert [(p.target_port, p.node_port) for p in np.ports] == [(8080, 30080), ("dns", None)]
    assert (np.external_traffic_policy, np.internal_traffic_policy, np.ip_families) == ("Local", "Local", ("IPv4",))
    headless = parse_object(svc(clusterIP="None", ports=None))
    assert headless.headless and headless.ports == ()
    manual = parse_object(svc(selector=None))
    assert manual.selector is None
    ext = parse_object(svc(type="ExternalName", externalName="db.example.com"))
    assert ext.external_name == "db.example.com" and ext.ports == ()


@pytest.mark.parametrize("spec,path", [
    ({"type": "Balancer"}, "spec.type"),
    ({"ports": []}, "spec.ports"),
    ({"ports": [{"name": "http", "port": 0}]}, "spec.ports[0].port"),
    ({"ports": [{"name": "http", "port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol"),
    ({"ports": [{"name": "Http", "port": 80}]}, "spec.ports[0].name"),
    ({"ports": [{"name": "http", "port": 80, "targetPort": "no_underscores"}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"name": "http", "port": 80, "targetPort": 70000}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"name": "http", "port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort"),
    ({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 8080}]}, "spec.ports[0].nodePort"),
    ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "spec.ports[1].name"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}, "spec.ports[1]"),
    ({"clusterIP": "10.96.0.300"}, "spec.clusterIP"),
    ({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"]}, "spec.clusterIPs[0]"),
    ({"type": "NodePort", "clusterIP": "None"}, "spec.clusterIP"),
    ({"sessionAffinity": "Cookie"}, "spec.sessionAffinity"),
    ({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
    ({"externalTrafficPolicy": "Local"}, "spec.externalTrafficPolicy"),
    ({"type": "NodePort", "externalTrafficPolicy": "Nearby"}, "spec.externalTrafficPolicy"),
    ({"internalTrafficPolicy": "local"}, "spec.internalTrafficPolicy"),
    ({"ipFamilies": ["IPv5"]}, "spec.ipFamilies[0]"),
    ({"ipFamilyPolicy": "DualStack"}, "spec.ipFamilyPolicy"),
    ({"selector": {"app": None}}, "spec.selector.app"),
    ({"type": "ExternalName"}, "spec.externalName"),
])
def test_bad_service_names_the_field(spec, path):
    with pytest.raises(ObjectError) as ei:
        parse_object(svc(**spec))
    assert ei.value.path == path, str(ei.value)
    assert str(ei.value).startswith(f"Service web: {path}: ")


def test_endpointslice_conditions_read_as_documented():
    s = parse_object(eps(endpoints=[
        {"addresses": ["10.42.0.5"]},  # all nil: ready, serving, not terminating
        {"addresses": ["10.42.0.6"], "conditions": {"ready": False}},  # serving nil = ready
        {"addresses": ["10.42.0.7"], "conditions": {"ready": False, "serving": True, "terminating": True}},
    ]))
    assert s.service_name == "web" and s.address_type == "IPv4"
    assert [(e.ready, e.serving, e.terminating) for e in s.endpoints] == [
        (True, True, False), (False, False, False), (False, True, True)]
    assert s.ports[0].port == 8080 and s.ports[0].protocol == "TCP"
    full = parse_object(eps())
    assert full.endpoints[0].node_name == "node-1" and full.endpoints[0].target_ref.name == "web-0"
    unlabelled = copy.deepcopy(eps())
    del unlabelled["metadata"]["labels"]
    assert parse_object(unlabelled).service_name is None


@pytest.mark.parametrize("patch,path", [
    ({"addressType": "IPv7"}, "addressType"),
    ({"endpoints": [{"addresses": []}]}, "endpoints[0].addresses"),
    ({"endpoints": [{"addresses": ["fd00::1"]}]}, "endpoints[0].addresses[0]"),
    ({"endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": "yes"}}]}, "endpoints[0].conditions.ready"),
    ({"endpoints": [{"addresses": ["10.42.0.5"], "targetRef": {"kind": "Pod"}}]}, "endpoints[0].targetRef.name"),
    ({"ports": [{"name": "http", "port": 0}]}, "ports[0].port"),
    ({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}, "ports[1].name"),
    ({"ports": [{"name": "http", "port": 80, "protocol": "tcp"}]}, "ports[0].protocol"),
])
def test_bad_endpointslice_names_the_field(patch, path):
    with pytest.raises(ObjectError) as ei:
        parse_object(eps(**patch))
    assert ei.value.path == path, str(ei.value)


def test_pod_readiness_and_termination():
    pod = {"kind": "Pod", "metadata": {"name": "a", "namespace": "x"}, "spec": {},
           "status": {"podIP": "10.42.0.5", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert parse_object(pod).ready and not parse_object(pod).terminating
    pod["status"]["conditions"][0]["status"] = "False"
    assert not parse_object(pod).ready
    del pod["status"]["conditions"]
    assert not parse_object(pod).ready  # no Ready condition: not ready (as the EndpointSlice controller reads it)
    pod["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert parse_object(pod).terminating
