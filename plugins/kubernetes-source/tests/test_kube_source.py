"""The Kubernetes API state source against a real HTTP server speaking list/watch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from novanet_kube_source.source import KubernetesSource
from novanet_kube_source.testing import FakeKubeAPI


def pod(name, labels, ns="x", ip=None):
    p = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns, "labels": labels},
         "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]},
         "status": {}}
    if ip:
        p["status"] = {"podIP": ip, "hostIP": "172.30.0.2"}
    return p


@pytest.fixture
def api():
    a = FakeKubeAPI().start()
    yield a
    a.stop()


def drain(src, stop, until, timeout=10.0):
    seen = []
    deadline = time.monotonic() + timeout

    def run():
        for ev in src.watch(stop):
            seen.append(ev)
            if until(seen) or time.monotonic() > deadline:
                stop.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, seen


def test_snapshot_lists_every_kind(api):
    api.put({"kind": "Node", "metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.42.0.0/24"},
             "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.2"}]}})
    api.put({"kind": "Namespace", "metadata": {"name": "x", "labels": {"ns": "x"}}})
    api.put(pod("a", {"app": "web"}, ip="10.42.0.5"))
    api.put({"kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}}})
    st = KubernetesSource(host=api.url).snapshot()
    assert st.nodes["node-1"].pod_cidr == "10.42.0.0/24" and st.nodes["node-1"].internal_ip == "172.30.0.2"
    assert st.namespaces["x"].labels == {"ns": "x"}
    assert st.pods["x/a"].labels == {"app": "web"} and st.pods["x/a"].ip == "10.42.0.5"
    assert st.pods["x/a"].ports[0].name == "http"
    assert "x/deny" in st.policies


def test_watch_streams_adds_changes_and_deletes(api):
    api.put(pod("a", {"app": "web"}))
    src = KubernetesSource(host=api.url, watch_timeout=2)
    src.snapshot()
    stop = threading.Event()
    t, seen = drain(src, stop, lambda s: any(e.type == "DELETED" for e in s))
    time.sleep(0.3)
    api.put(pod("a", {"app": "db"}))
    api.put(pod("b", {"app": "web"}))
    api.delete("Pod", "a", "x")
    t.join(15)
    stop.set()
    kinds = [(e.type, e.obj.key, dict(e.obj.labels)) for e in seen if e.obj is not None]
    assert kinds == [("MODIFIED", "x/a", {"app": "db"}), ("ADDED", "x/b", {"app": "web"}), ("DELETED", "x/a", {"app": "db"})]
    assert any(e.type == "SYNCED" for e in seen)


def test_expired_watch_relists_and_emits_the_difference(api):
    api.put(pod("a", {"app": "web"}))
    api.put(pod("gone", {"app": "x"}))
    src = KubernetesSource(host=api.url, watch_timeout=1)
    src.snapshot()
    # Changes happen while history is compacted away: the watch gets 410 Gone and must re-list.
    api.put(pod("a", {"app": "db"}))
    api.delete("Pod", "gone", "x")
    api.put(pod("new", {"app": "y"}))
    api.compact()
    stop = threading.Event()
    t, seen = drain(src, stop, lambda s: len([e for e in s if e.obj is not None]) >= 3)
    t.join(15)
    stop.set()
    got = {(e.type, e.obj.key) for e in seen if e.obj is not None}
    assert got == {("MODIFIED", "x/a"), ("DELETED", "x/gone"), ("ADDED", "x/new")}


def test_a_bad_object_is_reported_and_skipped(api):
    bad = pod("bad", {"app": "web"})
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    api.put(bad)
    api.put(pod("good", {"app": "web"}))
    src = KubernetesSource(host=api.url)
    st = src.snapshot()
    assert "x/good" in st.pods and "x/bad" not in st.pods
    assert any("spec.containers[0].ports[0].containerPort" in e for e in src.errors)


def service(name, ns="x", **spec):
    return {"kind": "Service", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.20",
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}


def endpointslice(name, service_name, ips, ns="x", ready=True):
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-1",
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": f"p{i}"}} for i, ip in enumerate(ips)]}


def test_services_and_endpointslices_are_listed_and_watched(api):
    api.put(service("web"))
    api.put(endpointslice("web-abc", "web", ["10.42.0.5"]))
    src = KubernetesSource(host=api.url, watch_timeout=2)
    st = src.snapshot()
    svc = st.services["x/web"]
    assert svc.cluster_ip == "10.96.0.20" and svc.ports[0].target_port == "http" and svc.selector == {"app": "web"}
    eps = st.endpointslices["x/web-abc"]
    assert eps.service_name == "web" and eps.endpoints[0].addresses == ("10.42.0.5",) and eps.ports[0].port == 80
    stop = threading.Event()
    t, seen = drain(src, stop, lambda s: any(e.type == "DELETED" for e in s) and any(e.kind == "Service" for e in s))
    api.put(endpointslice("web-abc", "web", ["10.42.0.5", "10.42.1.9"]))
    api.put(service("web", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    api.delete("EndpointSlice", "web-abc", "x")
    t.join(15)
    stop.set()
    # One watch per kind: the order holds within a kind, not across kinds.
    got = [(e.type, e.kind, e.obj.key) for e in seen if e.obj is not None]
    assert [g for g in got if g[1] == "EndpointSlice"] == [("MODIFIED", "EndpointSlice", "x/web-abc"),
                                                           ("DELETED", "EndpointSlice", "x/web-abc")]
    assert [g for g in got if g[1] == "Service"] == [("MODIFIED", "Service", "x/web")]
    assert [len(e.obj.endpoints) for e in seen if e.kind == "EndpointSlice"] == [2, 2]
    assert next(e.obj for e in seen if e.kind == "Service").ports[0].node_port == 30080


def test_a_bad_service_is_reported_and_the_others_kept(api):
    api.put(service("bad", ports=[{"name": "http", "port": 80, "nodePort": 30080}]))  # nodePort on a ClusterIP
    api.put(service("good"))
    src = KubernetesSource(host=api.url)
    st = src.snapshot()
    assert set(st.services) == {"x/good"}
    assert any("Service bad: spec.ports[0].nodePort: may not be used when type is 'ClusterIP'" in e for e in src.errors)


# Every kind the source lists, as the ClusterRole must grant it.
RESOURCES = {"Node": ("", "nodes"), "Namespace": ("", "namespaces"), "Pod": ("", "pods"),
             "NetworkPolicy": ("networking.k8s.io", "networkpolicies"), "Service": ("", "services"),
             "EndpointSlice": ("discovery.k8s.io", "endpointslices")}


def test_the_charts_cluster_role_grants_list_and_watch_of_every_kind(api):
    rbac = Path(__file__).resolve().parents[3] / "charts" / "novanet" / "templates" / "rbac.yaml"
    role = next(d for d in (yaml.safe_load(t) for t in rbac.read_text().split("\n---\n") if "kind: ClusterRole\n" in t))
    granted = {(g, r) for rule in role["rules"] if {"list", "watch"} <= set(rule["verbs"])
               for g in rule["apiGroups"] for r in rule["resources"]}
    kinds = [k.kind for k in KubernetesSource(host=api.url).kinds]
    assert set(kinds) == set(RESOURCES)
    assert {RESOURCES[k] for k in kinds} <= granted


# --------------------------------------------------------------------------- TLS

@pytest.fixture
def tls_api(tmp_path):
    import subprocess

    cert, key = tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kube-apiserver",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    a = FakeKubeAPI(tls=(str(cert), str(key))).start()
    a.put(pod("a", {"app": "web"}, ip="10.42.1.5"))
    yield a, cert
    a.stop()


def test_self_signed_api_server_is_refused_by_default(tls_api):
    a, _ = tls_api
    assert a.url.startswith("https://")
    with pytest.raises(Exception) as ei:
        KubernetesSource(host=a.url).snapshot()
    assert "CERTIFICATE_VERIFY_FAILED" in repr(ei.value) or "certificate verify failed" in repr(ei.value)


def test_api_server_is_trusted_with_its_ca_file(tls_api):
    a, cert = tls_api
    st = KubernetesSource(host=a.url, ca_file=str(cert)).snapshot()
    assert "x/a" in st.pods


def test_kubeconfig_without_its_ca_is_refused_and_with_it_trusted(tls_api, tmp_path):
    import base64

    import yaml

    a, cert = tls_api
    for name, cluster in (("no-ca", {"server": a.url}),
                          ("ca", {"server": a.url,
                                  "certificate-authority-data": base64.b64encode(cert.read_bytes()).decode()})):
        kc = tmp_path / f"{name}.kubeconfig"
        kc.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": cluster}], "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
        if name == "no-ca":
            with pytest.raises(Exception) as ei:
                KubernetesSource(kubeconfig=str(kc)).snapshot()
            assert "CERTIFICATE_VERIFY_FAILED" in repr(ei.value) or "certificate verify failed" in repr(ei.value)
        else:
            assert "x/a" in KubernetesSource(kubeconfig=str(kc)).snapshot().pods


def test_skipping_verification_is_explicit_and_logged(tls_api, caplog):
    a, _ = tls_api
    with caplog.at_level("WARNING"):
        st = KubernetesSource(host=a.url, insecure_skip_tls_verify=True).snapshot()
    assert "x/a" in st.pods
    assert "NOT verified" in caplog.text
