"""Diagnostics both daemons serve on their socket, for ``novanetctl debug-bundle``.

``logs.tail`` (both): the daemon's last log lines. The agent adds ``debug.node``, the node's own
view the guide's bundle asks for (kernel, BTF, bpffs, links, routes, tunnel devices), taken by the
agent in its own network and mount namespace, so it is right in a container and in a lab node
alike; and ``state.dump``: the cluster state it works from (nodes, namespaces, pods,
NetworkPolicies), the node's equivalent of the bundle's ``kubectl get`` items.
"""

from __future__ import annotations

import subprocess
from typing import Any

from novanet_core.api.protocol import ApiError
from novanet_core.logging_setup import RECENT_LINES, recent

# name -> argv: a fixed list (nothing a caller passes is ever run)
NODE_COMMANDS: dict[str, list[str]] = {
    "uname": ["uname", "-a"],
    "kernel": ["uname", "-r"],
    "btf": ["ls", "-la", "/sys/kernel/btf/vmlinux"],
    "links": ["ip", "-d", "link", "show"],
    "addresses": ["ip", "addr", "show"],
    "routes": ["ip", "route", "show"],
    "geneve": ["ip", "-d", "link", "show", "type", "geneve"],
    "vxlan": ["ip", "-d", "link", "show", "type", "vxlan"],
    "bpf_stats_enabled": ["sysctl", "kernel.bpf_stats_enabled"],
    "nft": ["nft", "list", "table", "ip", "novanet"],
}


def run(argv: list[str], timeout: float = 10.0) -> dict[str, Any]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return {"argv": argv, "exit": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"argv": argv, "exit": None, "stdout": "", "stderr": f"{type(e).__name__}: {e}"}


def _lines(p: dict[str, Any]) -> int:
    n = p.get("lines", 500)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= RECENT_LINES:
        raise ApiError("invalid_params", f"lines: {n!r} is not an integer in 0..{RECENT_LINES}")
    return n


def register(router: Any, component: str, bpf_root: str = "", agent: Any = None) -> None:
    router.add("logs.tail", lambda p: {"component": component, "lines": recent(_lines(p))},
               doc="the daemon's last log lines: params lines (default 500)")
    if component != "agent":
        return

    def node(p: dict[str, Any]) -> dict[str, Any]:
        """The node's view for the debug bundle: fixed commands run by the agent where it runs."""
        cmds = dict(NODE_COMMANDS, bpffs=["ls", "-laR", bpf_root or "/sys/fs/bpf/novanet"])
        return {name: run(argv) for name, argv in cmds.items()}

    def state(p: dict[str, Any]) -> dict[str, Any]:
        """The cluster state the agent works from (the manifests' or the API server's objects)."""
        st = agent.state
        return {
            "version": st.version,
            "nodes": [{"name": n.name, "internalIP": n.internal_ip, "podCIDR": n.pod_cidr}
                      for n in sorted(st.nodes.values(), key=lambda n: n.name)],
            "namespaces": [{"name": n.name, "labels": dict(n.labels)}
                           for n in sorted(st.namespaces.values(), key=lambda n: n.name)],
            "pods": [{"namespace": x.namespace, "name": x.name, "node": x.node, "ip": x.ip, "hostIP": x.host_ip,
                      "labels": dict(x.labels)} for x in sorted(st.pods.values(), key=lambda x: x.key)],
            "networkPolicies": [{"namespace": x.namespace, "name": x.name, "spec": x.spec}
                                for x in sorted(st.policies.values(), key=lambda x: x.key)],
        }

    def summary(p: dict[str, Any]) -> dict[str, Any]:
        """The agent's side of ``novanetctl metrics``: counts, CNI verbs with p50/p99, routing sessions."""
        a = agent
        pol = a.policy.status()
        out: dict[str, Any] = {
            "node": a.node.name, "ready": a.ready, "dataplaneConnected": a.dataplane.connected,
            "endpoints": len(a.store.all()), "identities": len(a.identities.items()),
            "remoteEndpoints": len(a.nodes.remotes), "nodes": 1 + len(a.nodes.remote_nodes or []),
            "policies": pol["policies"], "rejectedPolicies": pol["rejected"],
            "policyProgramming": pol.get("programming", {}),
            "tunnels": len(a.tunnel.status()) if a.tunnel is not None else 0,
            "cni": a.cni_stats.summary(),
        }
        if a.routing is not None:
            try:
                out["routing"] = {"backend": a.routing.name, **a.routing.status()}
            except Exception as e:  # the summary must answer even when the routing backend is broken
                out["routing"] = {"backend": a.routing.name, "error": f"{type(e).__name__}: {e}"}
        return out

    router.add("metrics.summary", summary, doc="agent counts, CNI verbs (counts, p50/p99), routing")
    router.add("debug.node", node, doc="kernel, BTF, bpffs, links, routes, tunnel devices, as this node sees them")
    router.add("state.dump", state, doc="nodes, namespaces, pods and NetworkPolicies of the agent's state")
