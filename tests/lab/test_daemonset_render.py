"""DaemonSet labs without root: the chart rendered for a lab node, the pod podman gets, spec errors."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import yaml
from novanet_lab.daemonset import prepare
from novanet_lab.daemonset.render import for_podman, kube_documents, lab_values, node_pod, render
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.spec import parse_spec

from tests.support.node import ROOT

CHART = ROOT / "charts" / "novanet"


@functools.cache
def _rendered(mode: str) -> tuple[dict, dict]:
    cfg = {"clusterCIDR": "10.42.0.0/16", "routingMode": mode}
    return render(CHART, lab_values(cfg, "/var/lib/novanet-lab/l/manifests", {}))


def rendered(mode: str = "overlay") -> tuple[dict, dict]:
    """(ConfigMap, DaemonSet) for a lab in ``mode``: one render per mode (Helm's engine is slow to load)."""
    return copy.deepcopy(_rendered(mode))


def containers(pod: dict) -> list[dict]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


def test_the_lab_values_reach_the_configmap_and_the_agent_mounts_the_manifests():
    cm, ds = rendered()
    cfg = yaml.safe_load(cm["data"]["novanet.yaml"])
    assert cfg["stateSource"] == {"type": "manifests", "path": "/var/lib/novanet-lab/l/manifests"}
    assert cfg["routingMode"] == "overlay"
    spec = ds["spec"]["template"]["spec"]
    assert {"name": "lab-manifests", "hostPath": {"path": "/var/lib/novanet-lab/l/manifests", "type": "Directory"}} in spec["volumes"]
    agent = next(c for c in spec["containers"] if c["name"] == "novanet-agent")
    assert {"name": "lab-manifests", "mountPath": "/var/lib/novanet-lab/l/manifests", "readOnly": True} in agent["volumeMounts"]


def test_for_podman_changes_only_what_podman_cannot_take():
    _, ds = rendered("native")
    pod = node_pod(ds, "node-1")
    out = for_podman(pod, "172.30.0.2")
    assert out["metadata"]["name"] == "novanet-node-1" and out["spec"]["nodeName"] == "node-1"
    assert out["spec"]["restartPolicy"] == "OnFailure"
    assert {c["name"] for c in containers(out)} == {c["name"] for c in containers(pod)}  # the FRR sidecar too
    assert "frr" in {c["name"] for c in out["spec"]["containers"]}
    for c in containers(out):
        assert not {"ports", "livenessProbe", "readinessProbe", "startupProbe"} & set(c), c["name"]
        assert all("valueFrom" not in e or "fieldRef" not in e["valueFrom"]
                   or e["valueFrom"]["fieldRef"]["fieldPath"] not in ("spec.nodeName", "status.hostIP")
                   for e in c.get("env", []))
    envs = {e["name"]: e.get("value") for c in containers(out) for e in c.get("env", [])}
    assert "node-1" in envs.values() and "172.30.0.2" in envs.values()
    assert all(len(str(v)) <= 63 for v in out["metadata"]["annotations"].values())
    # the rest is the chart's pod as rendered
    strip = {"ports", "livenessProbe", "readinessProbe", "startupProbe", "env"}
    assert [{k: v for k, v in c.items() if k not in strip} for c in containers(out)] == \
        [{k: v for k, v in c.items() if k not in strip} for c in containers(pod)]
    assert out["spec"]["volumes"] == pod["spec"]["volumes"]
    docs = list(yaml.safe_load_all(kube_documents(*rendered(), "node-1", "172.30.0.2")))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Pod"]


def _spec(tmp_path: Path, **daemonset: str) -> object:
    return parse_spec({"name": "dsr", "nodes": [{"name": "node-1"}],
                       "daemonset": {"chart": str(CHART), "imageStore": str(tmp_path), **daemonset}})


def test_a_missing_image_store_or_chart_names_the_field(tmp_path):
    with pytest.raises(LabError, match=r"daemonset\.imageStore: .* has no overlay-images \(run `make image`\)"):
        prepare(_spec(tmp_path), LabPaths("dsr"), None, {"node-1": "172.30.0.2"}, {})
    (tmp_path / "overlay-images").mkdir()
    with pytest.raises(LabError, match=r"daemonset\.chart: .* has no Chart\.yaml"):
        prepare(_spec(tmp_path, chart=str(tmp_path)), LabPaths("dsr"), None, {"node-1": "172.30.0.2"}, {})


def test_a_router_peer_list_is_refused_with_daemonset(tmp_path):
    with pytest.raises(LabError, match=r"routers\[0\]\.peers: with daemonset"):
        parse_spec({"name": "dsr", "cluster": {"routingMode": "native"}, "nodes": [{"name": "node-1"}, {"name": "node-2"}],
                    "routers": [{"name": "tor", "asn": 65000, "peers": ["node-1"]}],
                    "daemonset": {"chart": str(CHART), "imageStore": str(tmp_path)}})
