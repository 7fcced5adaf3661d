"""Daemonset labs (spec ``daemonset:``): each node runs NovaNet from the chart's DaemonSet pod.

Instead of starting novanet-dataplane, novanet-agent (and, in native mode, FRR) as lab processes,
the lab does what a cluster around a node does, with the real parts where they run here:

- Helm: the chart is rendered by Helm's engine (:mod:`.render`), values from the spec;
- the DaemonSet controller and the scheduler: one Pod per node from the template;
- the kubelet and its runtime: ``podman kube play`` of that pod inside the node (its netns is the
  pod's host network; its mounts are private, :mod:`.mounts`), with the changes podman needs to
  act as a kubelet (:func:`.render.for_podman`); a rolling restart is ``kube play --replace``;
- the runtime creating pods: the lab's CNI invoker runs, inside the node, the binary and the
  conflist the pod's install-cni init container put in the node's /opt/cni/bin and /etc/cni/net.d;
- the API server: the manifests state source, whose directory the agent gets as an extra volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from novanet_lab import routers
from novanet_lab.daemonset import node as ds_node
from novanet_lab.daemonset.render import kube_documents, lab_values, render
from novanet_lab.errors import LabError
from novanet_lab.nodeconfig import cluster_config, validate_node_config
from novanet_lab.paths import LabPaths
from novanet_lab.spec import LabSpec


@dataclass
class Prepared:
    configmap: dict[str, Any]
    daemonset: dict[str, Any]
    image: str
    image_store: str

    def config_text(self) -> str:
        return str(self.configmap["data"]["novanet.yaml"])

    def node_config(self, node: str, node_ip: str) -> dict[str, Any]:
        """The config the node's agent runs with: the ConfigMap's file plus the downward-API env."""
        cfg = yaml.safe_load(self.config_text()) or {}
        cfg.update(nodeName=node, nodeIP=node_ip)
        validate_node_config(cfg, node)
        return cfg


def _path(base: Path, value: str, key: str, must: str) -> Path:
    p = (base / value).resolve()
    if not (p / must).exists():
        raise LabError(f"invalid lab spec: daemonset.{key}: {p} has no {must}"
                       + (" (run `make image`)" if key == "imageStore" else ""))
    return p


def prepare(spec: LabSpec, paths: LabPaths, spec_file: str | None, node_ips: dict[str, str],
            router_ips: dict[str, str]) -> Prepared:
    """Render the chart for this lab and check every node's config; nothing is made yet."""
    assert spec.daemonset is not None
    base = Path(spec_file).resolve().parent if spec_file else Path.cwd()
    chart = _path(base, spec.daemonset.chart, "chart", "Chart.yaml")
    store = _path(base, spec.daemonset.imageStore, "imageStore", "overlay-images")
    cfg = cluster_config(spec)
    if spec.routers:
        settings = cfg.setdefault("routing", {}).setdefault("settings", {})
        settings["peers"] = list(settings.get("peers") or []) + routers.router_peers(spec, spec.nodes[0].name, router_ips)
    cm, ds = render(chart, lab_values(cfg, str(paths.manifest_dir), spec.daemonset.values))
    agent = next((c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "novanet-agent"), None)
    if agent is None:
        raise LabError(f"daemonset.chart: {chart}'s DaemonSet has no novanet-agent container")
    prep = Prepared(cm, ds, str(agent["image"]), str(store))
    for n, ip in node_ips.items():
        prep.node_config(n, ip)
    return prep


def start(paths: LabPaths, prep: Prepared, nodes: Iterable[tuple[str, str]], progress: Callable[[str], None]) -> None:
    """Private mounts, podman and the DaemonSet pod on every (node, ip), nodes in parallel."""

    def one(node: str, ip: str) -> None:
        ds_node.prepare(paths, node, kube_documents(prep.configmap, prep.daemonset, node, ip), prep.image_store)
        ds_node.start_holder(paths, node)
        progress(f"node {node}: podman kube play of the DaemonSet pod ({prep.image})")
        ds_node.play(paths, node, prep.image)

    nodes = list(nodes)
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = [pool.submit(one, n, ip) for n, ip in nodes]
        errors = []
        for f in futures:
            try:
                f.result()
            except LabError as e:
                errors.append(str(e))
    if errors:
        raise LabError("\n".join(errors))


def image_of(paths: LabPaths, node: str) -> str:
    """The image the node's pod runs (from its pod file: restarts reuse what up rendered)."""
    docs = list(yaml.safe_load_all(ds_node.pod_file(paths, node).read_text()))
    pod = next(d for d in docs if d.get("kind") == "Pod")
    return str(pod["spec"]["containers"][0]["image"])
