"""Per-node NovaNet config files for a lab: the spec's cluster: keys plus the lab-owned per-node keys.

The result is validated with NovaNetConfig before anything starts, and errors from keys the spec
passed through are reported as ``cluster.<key>`` so the user sees the line of the spec to fix.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from novanet_core.config.fielderrors import field_errors
from novanet_core.config.models import NovaNetConfig
from novanet_lab import cgroups
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.spec import LabSpec, loc_path

AGENT_METRICS_PORT = 9103
DATAPLANE_METRICS_PORT = 9104

# Spec keys that are lab-only and never reach the agent.
_SPEC_ONLY = {"nodeCIDRMaskSize", "kubeProxy"}


def cluster_config(spec: LabSpec) -> dict[str, Any]:
    """The config keys every node shares: the spec's cluster: keys that reach the agents."""
    cluster = spec.cluster.model_dump(exclude_none=True)
    cfg: dict[str, Any] = {k: copy.deepcopy(v) for k, v in cluster.items() if k not in _SPEC_ONLY}
    # nodeCIDRMaskSize is a NovaNetConfig key too; pass it so the agent agrees with the carving.
    cfg["nodeCIDRMaskSize"] = spec.cluster.nodeCIDRMaskSize
    cfg.setdefault("mtu", "auto")
    return cfg


def node_config(spec: LabSpec, paths: LabPaths, node: str, node_ip: str, pod_cidr: str) -> dict[str, Any]:
    cfg = cluster_config(spec)
    cfg.update(
        nodeName=node,
        nodeIP=node_ip,
        podCIDR=pod_cidr,
        sockets={
            "agent": str(paths.socket(node, "agent")),
            "cni": str(paths.socket(node, "cni")),
            "dataplane": str(paths.socket(node, "dataplane")),
        },
        stateSource={"type": "manifests", "path": str(paths.manifest_dir)},
        stateDir=str(paths.node_dir(node) / "agent-state"),
    )
    cfg["ipam"] = {**cfg.get("ipam", {}), "dataDir": str(paths.node_ipam_dir(node))}
    # the node's cgroup (novanet_lab.cgroups): its pods' processes run there, so the
    # socket-level Service programs attach there, not at the machine's cgroup root
    cfg["bpf"] = {**cfg.get("bpf", {}), "root": str(paths.node_bpf_root(node)),
                  "cgroupRoot": str(cgroups.node_dir(paths.lab, node))}
    # Both daemons serve /metrics on the node address, so a Prometheus on the underlay scrapes
    # every node (the defaults would bind 127.0.0.1 inside the node netns). A dual-stack node
    # serves on its first (primary) address.
    primary = node_ip.split(",")[0].strip()
    host = f"[{primary}]" if ":" in primary else primary
    cfg["metrics"] = {"address": f"{host}:{AGENT_METRICS_PORT}", "dataplaneAddress": f"{host}:{DATAPLANE_METRICS_PORT}",
                      **cfg.get("metrics", {})}
    validate_node_config(cfg, node)
    return cfg


def validate_node_config(cfg: dict[str, Any], node: str) -> NovaNetConfig:
    try:
        return NovaNetConfig.model_validate(cfg)
    except ValidationError as e:
        lines = []
        for loc, msg in field_errors(e, unknown="unknown NovaNet config key", missing=None):
            path = loc_path(loc)
            where = f"cluster.{path}" if loc and loc[0] not in _LAB_SET else f"{path} (node {node})"
            lines.append(f"  {where}: {msg}")
        raise LabError("invalid lab spec (agent config check):\n" + "\n".join(lines)) from None


_LAB_SET = {"nodeName", "nodeIP", "podCIDR", "sockets", "stateSource", "stateDir"}
