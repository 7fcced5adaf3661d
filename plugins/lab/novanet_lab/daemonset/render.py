"""The chart's DaemonSet pod, for one lab node: rendered by Helm's engine, then made into what podman runs.

``render`` runs the chart through a real Helm engine offline (helm-python-sdk, as ``helm
template``) with values the lab derives from its spec (:func:`lab_values`); ``node_pod`` does what
the DaemonSet controller and the scheduler do (one Pod per node from the template, bound to the
node); :func:`for_podman` is the one place where the pod is changed because podman 4.3 is not a
kubelet. docs/install.md lists those changes; keep both in step.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from novanet_lab.errors import LabError

# The lab's agent socket is agent.sock (novanet_lab.paths); the chart's default name differs, and
# novanetctl --node and `lab status` find a node's agent by the lab's layout.
LAB_SOCKETS = {"agent": "/run/novanet/agent.sock", "cni": "/run/novanet/cni.sock",
               "dataplane": "/run/novanet/dataplane.sock"}
MANIFESTS_VOLUME = "lab-manifests"
# The chart's cgroup.hostRoot in a lab: each node's mount namespace has its own lab cgroup
# (novanet_lab.cgroups) bound here (daemonset.node.mount_plan), as a real node has its root.
NODE_CGROUP = "/run/cgroupv2"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def lab_values(cluster_config: dict[str, Any], manifest_dir: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Helm values for a lab: the spec's cluster keys as ``config`` (verbatim, as for any NovaNet
    config key), the manifests state source standing in for the API server (its directory mounted
    into the agent like a kubeconfig would be), the lab's socket names, then the spec's own
    ``daemonset.values``."""
    config = {**copy.deepcopy(cluster_config), "stateSource": {"type": "manifests", "path": manifest_dir}}
    values = {
        "config": config,
        "sockets": dict(LAB_SOCKETS),
        "cgroup": {"hostRoot": NODE_CGROUP},
        "extraVolumes": [{"name": MANIFESTS_VOLUME, "hostPath": {"path": manifest_dir, "type": "Directory"}}],
        "extraVolumeMounts": [{"name": MANIFESTS_VOLUME, "mountPath": manifest_dir, "readOnly": True}],
    }
    return deep_merge(values, extra)


def render(chart: Path, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ConfigMap novanet-config, DaemonSet novanet) as the chart renders them with ``values``."""
    try:
        from helm_python import Chart
    except ImportError:
        raise LabError("daemonset: rendering the chart needs helm-python-sdk (pip install 'novanet-lab[daemonset]')") from None
    try:
        with Chart.load(str(chart)) as c:
            out = c.render(values=values, name="novanet", namespace="nova-system", is_install=True)
    except Exception as e:  # the engine's errors come as one exception type per binding version
        raise LabError(f"daemonset.chart: {chart} does not render: {e}") from None
    objs: dict[str, dict[str, Any]] = {}
    for name, text in out.items():
        if name.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and "kind" in doc:
                objs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    try:
        return objs["ConfigMap/novanet-config"], objs["DaemonSet/novanet"]
    except KeyError as e:
        raise LabError(f"daemonset.chart: {chart} renders no {e.args[0]}") from None


def node_pod(daemonset: dict[str, Any], node: str) -> dict[str, Any]:
    """The DaemonSet controller's pod for ``node``: the template, named for the node, bound to it."""
    tmpl = daemonset["spec"]["template"]
    meta = tmpl.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{daemonset['metadata']['name']}-{node}",
                     "namespace": daemonset["metadata"].get("namespace", "default"),
                     "labels": dict(meta.get("labels") or {}), "annotations": dict(meta.get("annotations") or {})},
        "spec": {**copy.deepcopy(tmpl["spec"]), "nodeName": node},
    }


def for_podman(pod: dict[str, Any], node_ip: str) -> dict[str, Any]:
    """The pod as podman 4.3's ``kube play`` must get it to behave as a kubelet would; nothing else changes.

    1. Downward API: ``env[].valueFrom.fieldRef`` of ``spec.nodeName`` and ``status.hostIP``
       become the values a kubelet would put there (podman has no node object to read them from).
    2. ``ports`` go: with ``hostNetwork`` they only document the ports for a kubelet, and podman
       refuses them ("PortMappings can only be used with Bridge or slirp4netns networking").
    3. ``restartPolicy: Always`` becomes ``OnFailure``: podman before 4.6 applies the pod's policy
       to init containers too (podman issue 15631), so install-cni, which exits 0, was restarted
       forever and the pod never started; a kubelet runs init containers to completion. A daemon
       that crashes (non-zero exit) is still restarted; one that exits 0 by itself is not.
    4. Probes go: podman runs them from systemd timers, and there is no systemd here (a kubelet
       runs them itself). The lab waits for the agent's own readiness, which is what /readyz
       serves.
    5. Annotations whose value is longer than 63 characters go (``checksum/config``, a sha256):
       podman before 5.0 holds annotation values to the 63-character limit of label values
       (podman issue 21663; the API server allows 256 KiB). The checksum's job, rolling the pods
       when the config changes, is the DaemonSet controller's, done here by rendering again.
    """
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if len(str(v)) <= 63}
    spec = pod["spec"]
    fields = {"spec.nodeName": spec.get("nodeName"), "status.hostIP": node_ip}
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for e in c.get("env", []):
            path = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if path in fields:
                del e["valueFrom"]
                e["value"] = fields[path]
        if spec.get("hostNetwork"):
            c.pop("ports", None)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            c.pop(probe, None)
    if spec.get("restartPolicy", "Always") == "Always":
        spec["restartPolicy"] = "OnFailure"
    return pod


def kube_documents(configmap: dict[str, Any], daemonset: dict[str, Any], node: str, node_ip: str) -> str:
    """The YAML ``podman kube play`` gets for ``node``: the ConfigMap (a configMap volume's source) and the pod."""
    return yaml.safe_dump_all([configmap, for_podman(node_pod(daemonset, node), node_ip)], sort_keys=False)
