"""The Helm chart, rendered by a real Helm engine and checked the way an API server would check it.

- Lint: helm-sdkpy (Helm's Go library) lints the chart; a broken copy must fail the same lint.
- Render: helm-sdkpy only lints and talks to clusters (its install has no client-only/dry-run
  mode), so rendering uses helm-python-sdk, another build of Helm's engine that renders offline
  (``helm template``). Both come from PyPI (contrib/setup-venv.sh, pyproject.toml).
- Every rendered object validates against the Kubernetes OpenAPI schemas (kubernetes-validate,
  strict: unknown fields are errors), and against the API server's own rules that the schemas
  do not carry (tests/support/apiserver_rules.py).
- The config the chart renders validates against NovaNet's config model, for the guide's
  ``--set`` keys and for the old ``config.*`` values.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart

from novanet_core.config.models import NovaNetConfig
from tests.support.apiserver_rules import check as apiserver_check

CHART = Path(__file__).resolve().parents[2] / "charts" / "novanet"
K8S_VERSIONS = ("1.28.0", "1.33.0")


def render(values: dict[str, Any] | None = None, chart: Path = CHART) -> dict[str, Any]:
    with Chart.load(str(chart)) as c:
        out = c.render(values=values or {}, name="novanet", namespace="nova-system", is_install=True)
    objs: dict[str, Any] = {"NOTES": out.pop("novanet/templates/NOTES.txt", "")}
    for text in out.values():
        for doc in yaml.safe_load_all(text):
            if doc:
                objs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objs


def config_of(objs: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(objs["ConfigMap/novanet-config"]["data"]["novanet.yaml"])


def pod_spec(objs: dict[str, Any]) -> dict[str, Any]:
    return objs["DaemonSet/novanet"]["spec"]["template"]["spec"]


def containers(objs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(objs)["containers"]}


def lint(chart: Path) -> dict[str, Any]:
    from helm_sdkpy import Configuration, Lint

    return asyncio.run(Lint(Configuration(namespace="nova-system")).run(str(chart)))


VARIANTS = {
    "default": {},
    "native": {"routingMode": "native", "routing": {"settings": {"asn": 64512}}},
    "geneve-kernel": {"tunnelProtocol": "geneve", "datapath": "kernel", "policy": {"defaultDeny": True}},
    "old-config-values": {"config": {"routingMode": "native", "egress": {"masqueradeEnabled": False}}},
}


def test_helm_lint_passes_and_catches_a_broken_template(tmp_path):
    result = lint(CHART)
    assert not result.get("Errors"), result
    assert all(m["Severity"] < 3 for m in result["Messages"]), result  # 3 and up: warnings/errors
    broken = tmp_path / "novanet"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "configmap.yaml").write_text("{{ .Values.nope.deeper }}\n")
    bad = lint(broken)
    assert bad.get("Errors") or any(m["Severity"] >= 3 for m in bad["Messages"]), bad


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_objects_pass_the_openapi_schemas_and_the_apiserver_rules(variant):
    objs = render(VARIANTS[variant])
    kinds = sorted(k.split("/")[0] for k in objs if k != "NOTES")
    # the second ConfigMap is the Grafana dashboard (templates/grafana-dashboard.yaml)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "DaemonSet", "Namespace",
                     "ServiceAccount"]
    for name, obj in objs.items():
        if name == "NOTES":
            continue
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(obj, v, strict=True)
        assert apiserver_check(obj) == [], name
    NovaNetConfig.model_validate(config_of(objs))


def test_the_apiserver_rules_catch_what_the_schema_lets_through():
    objs = render()
    ds = objs["DaemonSet/novanet"]
    dp = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "novanet-dataplane")
    dp["securityContext"] = {"capabilities": {"add": ["BPF"]}}
    dp["ports"][0]["hostPort"] = 1
    kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)  # the schema is fine with both
    errs = apiserver_check(ds)
    assert any("Bidirectional mount propagation is available only to privileged containers" in e for e in errs)
    assert any("must match `containerPort` when `hostNetwork` is true" in e for e in errs)


def test_the_guides_set_keys_reach_the_config():
    cfg = config_of(render({"egress": {"masqueradeEnabled": False}, "policy": {"defaultDeny": True},
                            "routingMode": "native", "tunnelProtocol": "geneve", "mtu": 1400}))
    assert cfg["egress"]["masqueradeEnabled"] is False and cfg["policy"]["defaultDeny"] is True
    assert cfg["routingMode"] == "native" and cfg["tunnelProtocol"] == "geneve" and cfg["mtu"] == 1400
    assert cfg["stateSource"] == {"type": "kubernetes"} and cfg["metrics"]["address"] == "0.0.0.0:9103"
    assert NovaNetConfig.model_validate(cfg).egress.masqueradeEnabled is False


def test_old_config_values_still_win_even_when_false():
    cfg = config_of(render({"config": {"egress": {"masqueradeEnabled": False}, "logLevel": "debug",
                                       "policy": {"defaultDeny": True}}}))
    assert cfg["egress"] == {"masqueradeEnabled": False}
    assert cfg["policy"]["defaultDeny"] is True and cfg["logLevel"] == "debug"
    assert cfg["routingMode"] == "overlay"  # the top-level default fills what config leaves out


def test_default_daemonset_runs_the_guides_containers_with_what_they_need():
    objs = render()
    spec = pod_spec(objs)
    cs = containers(objs)
    assert list(cs) == ["novanet-dataplane", "novanet-agent"]  # no FRR sidecar in overlay mode
    assert [c["name"] for c in spec["initContainers"]] == ["install-cni"]
    assert spec["hostNetwork"] is True and spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    agent, dp = cs["novanet-agent"], cs["novanet-dataplane"]
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9103}
    assert dp["command"][-2:] == ["--metrics-address", "0.0.0.0:9104"]
    assert {p["containerPort"] for c in cs.values() for p in c.get("ports", [])} == {9103, 9104}
    assert agent["lifecycle"]["preStop"]["exec"]["command"] == ["rm", "-f", "/host/etc/cni/net.d/10-novanet.conflist"]
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert "/run/xtables.lock" in mounts and mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    bpf = next(m for m in dp["volumeMounts"] if m["mountPath"] == "/sys/fs/bpf")
    assert bpf["mountPropagation"] == "Bidirectional" and dp["securityContext"]["privileged"] is True
    install = spec["initContainers"][0]["command"]
    assert install[:2] == ["novanet", "install-cni"] and install[-1] == "/run/novanet/cni.sock"


def test_native_mode_adds_the_frr_sidecar_sharing_run_frr():
    objs = render(VARIANTS["native"])
    cs = containers(objs)
    assert "frr" in cs
    assert {m["mountPath"] for m in cs["frr"]["volumeMounts"]} == {"/run/frr"}
    assert "/run/frr" in {m["mountPath"] for m in cs["novanet-agent"]["volumeMounts"]}
    assert {v["name"]: v for v in pod_spec(objs)["volumes"]}["frr-run"] == {"name": "frr-run", "emptyDir": {}}
    assert 'vtysh -c "show bgp summary"' in objs["NOTES"]
    assert config_of(objs)["routing"] == {"type": "frr-bgp", "settings": {"asn": 64512}}


def test_scheduling_and_resources_come_from_values():
    objs = render({"tolerations": [{"key": "x", "operator": "Exists", "effect": "NoSchedule"}],
                   "nodeSelector": {"pool": "net"}, "resources": {"agent": {"requests": {"cpu": "250m"}}},
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}}})
    spec = pod_spec(objs)
    assert spec["tolerations"] == [{"key": "x", "operator": "Exists", "effect": "NoSchedule"}]
    # maps merge with the chart's defaults, as Helm merges every values map
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "net"} and "nodeAffinity" in spec["affinity"]
    assert containers(objs)["novanet-agent"]["resources"]["requests"] == {"cpu": "250m", "memory": "128Mi"}


def test_rbac_lets_the_state_source_watch_what_it_reads():
    rules = render()["ClusterRole/novanet"]["rules"]
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
               if {"list", "watch"} <= set(rule["verbs"])}
    for need in [("", "pods"), ("", "nodes"), ("", "namespaces"), ("", "services"),
                 ("networking.k8s.io", "networkpolicies"), ("discovery.k8s.io", "endpointslices")]:
        assert need in granted


def test_the_chart_names_what_the_guide_names():
    objs = render()
    assert objs["DaemonSet/novanet"]["metadata"]["namespace"] == "nova-system"
    assert config_of(objs)["bpf"]["root"] == "/sys/fs/bpf/novanet"
    assert config_of(objs)["ipam"]["dataDir"] == "/var/lib/cni/networks/novanet"
