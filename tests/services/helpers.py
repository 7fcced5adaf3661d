"""Shared pieces of the Service lab tests: specs and probes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.lab import LabUnderTest

WEB_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "echo", "port": 9000, "protocol": "UDP"}]
WEB_SERVICE = {"name": "web", "namespace": "default", "selector": {"app": "web"},
               "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                         {"name": "echo", "port": 9000, "protocol": "UDP", "targetPort": "echo"}]}
NODEPORT_SERVICE = {"name": "web-np", "namespace": "default", "type": "NodePort", "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                              {"name": "echo", "port": 9000, "protocol": "UDP", "targetPort": "echo",
                               "nodePort": 30090}]}


def spec(nodes: int = 1, **cluster: Any) -> dict[str, Any]:
    names = [f"node-{i + 1}" for i in range(nodes)]
    return {
        "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan",
                    "policy": {"defaultDeny": False}, **cluster},
        "nodes": [{"name": n} for n in names],
        "namespaces": [{"name": "kube-system"}],
        "pods": [
            {"name": "web-1", "node": names[0], "labels": {"app": "web"}, "ports": WEB_PORTS},
            {"name": "web-2", "node": names[-1], "labels": {"app": "web"}, "ports": WEB_PORTS},
            {"name": "client", "node": names[0], "labels": {"app": "client"}},
        ],
        "services": [WEB_SERVICE, NODEPORT_SERVICE],
    }


def service(lab: LabUnderTest, key: str) -> dict[str, Any]:
    return next(s for s in lab.status()["services"] if f"{s['namespace']}/{s['name']}" == key)


def probe_service(lab: LabUnderTest, svc: str, *args: str) -> list[dict[str, Any]]:
    return lab.probe("--to-service", svc, *args)


def apply(lab: LabUnderTest, tmp: Path, text: str) -> str:
    f = tmp / "apply.yaml"
    f.write_text(text)
    return lab.cli("lab", "apply", "-f", str(f)).stdout


def node_rules(lab: LabUnderTest, node: str = "node-1", family: int = 4) -> str:
    """iptables-save and the kube-proxy nft table of a node (whatever of them exists), of the
    proxier of ``family`` (6: ip6tables-save and the ``ip6 kube-proxy`` table)."""
    ns = lab.node_netns(node)
    save, nft_family = ("ip6tables-save", "ip6") if family == 6 else ("iptables-save", "ip")
    ipt = subprocess.run(["nsenter", f"--net={ns}", save], capture_output=True, text=True).stdout
    nft = subprocess.run(["nsenter", f"--net={ns}", "nft", "list", "table", nft_family, "kube-proxy"],
                         capture_output=True, text=True).stdout
    return ipt + nft


def lab_exec(lab: LabUnderTest, pod: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return lab.cli("lab", "exec", pod, "--", *argv, check=False)


def agent_call(lab: LabUnderTest, method: str, params: dict[str, Any] | None = None, node: str = "node-1") -> Any:
    from novanet_core.api.client import ApiClient

    with ApiClient(str(lab.paths.socket(node, "agent")), timeout=30) as c:
        return json.loads(json.dumps(c.call(method, params or {})))
