"""The Kubernetes API state source against a real HTTP server speaking list/watch."""

from __future__ import annotations

import threading
import time

import pytest
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
