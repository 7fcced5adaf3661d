"""``lab status``: the lab's saved state checked against what is actually running.

The JSON shape is a public contract (docs/lab.md#status-json); add keys, never rename them.
"""

from __future__ import annotations

from typing import Any

from novanet_core.api.client import Unreachable
from novanet_core.api.protocol import ApiError
from novanet_lab import agents, netns, procs
from novanet_lab import state as lstate
from novanet_lab.errors import LabError
from novanet_lab.lifecycle import leftovers
from novanet_lab.paths import LabPaths
from novanet_lab.state import NodeState, PodState

AGENT_KEYS = ("ready", "stateVersion", "nodeName", "nodeIP", "podCIDR", "datapath", "endpoints", "identities",
              "podCIDRs")


def lab_status(lab: str) -> dict[str, Any]:
    paths = LabPaths(lab)
    st = lstate.load(paths)
    if st is None:
        left = leftovers(paths)
        if left:
            return {"name": lab, "phase": "broken", "healthy": False, "leftovers": left,
                    "hint": f"run `novanet lab down --name {lab}` to remove them"}
        raise LabError(f"lab {lab} does not exist (no {paths.state_file}); start one with `novanet lab up --spec FILE`")
    rows = [_node_status(paths, n) for n in st.nodes.values()]
    pod_rows = [_pod_status(paths, p) for p in st.pods.values()]
    healthy = st.phase == "up" and all(ok for _, ok in rows + pod_rows)
    nodes, pod_list = [r for r, _ in rows], [r for r, _ in pod_rows]
    return {
        "name": st.name,
        "phase": st.phase,
        "healthy": healthy,
        "specFile": st.specFile,
        "createdAt": st.createdAt,
        "cluster": st.spec.get("cluster", {}),
        "underlay": st.underlay.model_dump() if st.underlay else None,
        "outside": st.outside.model_dump() if st.outside else None,
        "manifestDir": str(paths.manifest_dir),
        "manifestVersion": st.manifestVersion,
        "nodes": nodes,
        "namespaces": [{"name": k, "labels": v} for k, v in st.namespaces.items()],
        "pods": pod_list,
        "networkPolicies": list(st.policies),
        "services": services_status(paths),
    }



def _node_status(paths: LabPaths, n: NodeState) -> tuple[dict[str, Any], bool]:
    """A node's row, and whether it is healthy: its agent ready, its dataplane running, its netns there."""
    agent_pid = agents.running_pid(paths, n.name, "agent")
    dp_pid = agents.running_pid(paths, n.name, "dataplane")
    agent: dict[str, Any] = {"pid": agent_pid, "running": agent_pid is not None, "socket": str(paths.socket(n.name, "agent"))}
    try:
        s = agents.agent_status(paths, n.name)
        agent.update({k: s.get(k) for k in AGENT_KEYS if k in s})
        if isinstance(agent.get("endpoints"), list):
            agent["endpoints"] = len(agent["endpoints"])
        if isinstance(agent.get("identities"), list):
            agent["identities"] = len(agent["identities"])
    except (Unreachable, OSError, ApiError, ValueError) as e:
        agent["ready"] = False
        agent["error"] = str(e)
    row = {
        "name": n.name,
        "netns": n.netns,
        "ip": n.ip,
        "podCIDR": n.podCIDR,
        "ips": n.ips or [n.ip],
        "podCIDRs": n.podCIDRs or [n.podCIDR],
        "config": n.config,
        "agent": agent,
        "dataplane": {"pid": dp_pid, "running": dp_pid is not None, "socket": str(paths.socket(n.name, "dataplane"))},
        "logs": {d: str(paths.daemon_log(n.name, d)) for d in agents.DAEMONS},
    }
    return row, bool(agent.get("ready")) and dp_pid is not None and netns.exists(n.netns)


def _pod_status(paths: LabPaths, p: PodState) -> tuple[dict[str, Any], bool]:
    """A pod's row, and whether it runs: its server process, address and netns there."""
    pid = procs.owned_pid(paths.pod_pid(p.namespace, p.name), agents.markers(paths))
    running = pid is not None and p.ip is not None and netns.exists(p.netns)
    return {
        "namespace": p.namespace,
        "name": p.name,
        "node": p.node,
        "ip": p.ip,
        "ips": p.ips or ([p.ip] if p.ip else []),
        "netns": p.netns,
        "containerId": p.containerId,
        "labels": p.labels,
        "ports": [{"port": x.port, "protocol": x.protocol, "name": x.name} for x in p.ports],
        "server": {"pid": pid, "running": pid is not None},
        "ready": running and p.ready,
    }, running

def services_status(paths: LabPaths) -> list[dict[str, Any]]:
    """Every Service with its endpoints, read from the manifests (what the agents have)."""
    from novanet_lab.services.reconcile import current

    state = current(paths)
    out = []
    for svc in sorted(state.services.values(), key=lambda s: s.key):
        endpoints: dict[str, dict[str, Any]] = {}
        for sl in sorted(state.endpointslices.values(), key=lambda s: s.name):
            if sl.namespace != svc.namespace or sl.service_name != svc.name:
                continue
            for e in sl.endpoints:
                ref = e.target_ref
                d = endpoints.setdefault(e.addresses[0], {
                    "ip": e.addresses[0], "node": e.node_name, "pod": f"{ref.namespace or sl.namespace}/{ref.name}"
                    if ref else None, "ready": e.ready, "serving": e.serving, "terminating": e.terminating,
                    "ports": []})
                d["ports"].extend({"name": p.name, "port": p.port, "protocol": p.protocol} for p in sl.ports)
        out.append({
            "namespace": svc.namespace, "name": svc.name, "type": svc.type,
            "clusterIP": svc.cluster_ip, "clusterIPs": list(svc.cluster_ips), "ipFamilies": list(svc.ip_families),
            "ipFamilyPolicy": svc.ip_family_policy, "headless": svc.headless,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol, "targetPort": p.target_port,
                       "nodePort": p.node_port} for p in svc.ports],
            "endpoints": list(endpoints.values()),
        })
    return out


def status_table(s: dict[str, Any]) -> str:
    if "leftovers" in s:
        return f"lab {s['name']}: BROKEN (no readable state file); left behind:\n  " + "\n  ".join(s["leftovers"]) + f"\n{s['hint']}"
    lines = [f"lab {s['name']}: {s['phase']}{'' if s['healthy'] else ' (NOT healthy)'}, manifest version "
             f"{s['manifestVersion']}, underlay {s['underlay']['cidr'] if s['underlay'] else '-'}"
             + (f", outside {','.join(s['outside'].get('addresses') or [s['outside']['address']])} "
                f"(via {','.join(s['outside'].get('ips') or [s['outside']['ip']])})" if s.get("outside") else "")]
    lines.append("")
    lines.append(_cols(["NODE", "IP", "POD CIDR", "AGENT", "READY", "STATE VERSION", "DATAPLANE", "DATAPATH"], [
        [n["name"], ",".join(n["ips"]), ",".join(n["podCIDRs"]), _pid(n["agent"]), str(n["agent"].get("ready", False)).lower(),
         str(n["agent"].get("stateVersion", "-")), _pid(n["dataplane"]), str(n["agent"].get("datapath", "-"))]
        for n in s["nodes"]
    ]))
    lines.append("")
    lines.append(_cols(["NAMESPACE", "POD", "NODE", "IP", "READY", "PORTS", "LABELS"], [
        [p["namespace"], p["name"], p["node"], ",".join(p["ips"]) or "-", str(p["ready"]).lower(),
         ",".join(f"{x['port']}/{x['protocol']}" for x in p["ports"]) or "-",
         ",".join(f"{k}={v}" for k, v in sorted(p["labels"].items())) or "<none>"]
        for p in s["pods"]
    ]))
    if s.get("services"):
        lines.append("")
        lines.append(_cols(["NAMESPACE", "SERVICE", "TYPE", "CLUSTER-IP", "PORTS", "ENDPOINTS"], [
            [v["namespace"], v["name"], v["type"], v["clusterIP"] or "-",
             ",".join(f"{p['port']}{':' + str(p['nodePort']) if p['nodePort'] else ''}/{p['protocol']}"
                      for p in v["ports"]) or "-",
             ",".join(f"{e['ip']}{'' if e['ready'] else '(not ready)'}" for e in v["endpoints"]) or "<none>"]
            for v in s["services"]
        ]))
    if s["networkPolicies"]:
        lines += ["", "NETWORK POLICIES: " + ", ".join(s["networkPolicies"])]
    return "\n".join(lines)


def _pid(d: dict[str, Any]) -> str:
    return f"pid {d['pid']}" if d.get("running") else "DOWN"


def _cols(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows])
