"""The lab's side of the manifest state source: Kubernetes-style objects in one shared directory.

One object per file (``<kind>_<ns>_<name>.yaml``; Kubernetes names have no ``_``), each written
atomically (temp file + rename), and a ``VERSION`` integer bumped after the files, so an agent that
has seen version N has seen every file written before N. The reader is
novanet_core.state.manifests.ManifestSource.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class ManifestWriter:
    def __init__(self, directory: Path):
        self.dir = directory

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def filename(kind: str, name: str, namespace: str | None = None) -> str:
        parts = [kind.lower()] + ([namespace] if namespace else []) + [name]
        return "_".join(parts) + ".yaml"

    def write(self, obj: dict[str, Any]) -> Path:
        meta = obj["metadata"]
        path = self.dir / self.filename(obj["kind"], meta["name"], meta.get("namespace"))
        _atomic_write(path, yaml.safe_dump(obj, sort_keys=False))
        return path

    def remove(self, kind: str, name: str, namespace: str | None = None) -> bool:
        try:
            (self.dir / self.filename(kind, name, namespace)).unlink()
            return True
        except FileNotFoundError:
            return False

    def version(self) -> int:
        try:
            return int((self.dir / "VERSION").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def bump(self) -> int:
        v = self.version() + 1
        _atomic_write(self.dir / "VERSION", f"{v}\n")
        return v


def node_object(name: str, ips: list[str], pod_cidrs: list[str]) -> dict[str, Any]:
    """A Node as the kubelet and kube-controller-manager leave it: one InternalIP and one PodCIDR
    per family, primary first (``spec.podCIDR`` is ``podCIDRs[0]``)."""
    addresses = [{"type": "InternalIP", "address": ip} for ip in ips]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)},
        "status": {"addresses": [*addresses, {"type": "Hostname", "address": name}]},
    }


def namespace_object(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def pod_object(
    namespace: str,
    name: str,
    node: str,
    labels: dict[str, str],
    ports: list[dict[str, Any]],
    pod_ip: str | None = None,
    host_ip: str | None = None,
    ready: bool = True,
    pod_ips: list[str] | None = None,
    host_ips: list[str] | None = None,
) -> dict[str, Any]:
    container_ports = []
    for p in ports:
        cp: dict[str, Any] = {"containerPort": p["port"], "protocol": p["protocol"]}
        if p.get("name"):
            cp["name"] = p["name"]
        container_ports.append(cp)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"nodeName": node, "containers": [{"name": "server", "ports": container_ports}]},
    }
    if pod_ip:
        obj["status"] = {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": ip} for ip in pod_ips or [pod_ip]],
                         "hostIP": host_ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        if host_ips and len(host_ips) > 1:
            obj["status"]["hostIPs"] = [{"ip": ip} for ip in host_ips]
    else:
        obj["status"] = {"phase": "Pending"}
    return obj
