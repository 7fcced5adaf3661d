"""One agent fed the state of a big cluster whose other nodes do not exist.

The state comes from the Kubernetes state source talking to the plugin's test API server
(real HTTP list+watch, ``novanet_kube_source.testing.FakeKubeAPI``) listening in the node's netns:
N nodes (node-0 is this one), P pods spread evenly over them, K NetworkPolicies spread over 100
namespaces. Sizes grow in steps (1 %, 10 %, 100 % of the target by default) so that the RSS per
remote pod is a slope, not a guess at a baseline. Per step: agent RSS, full-sync time (agent
process start -> ready with every remote pod pushed to the datapath), and after the sync the
agent-side cost of single pod events (``state.timings``: a label change, a new pod, a deleted pod).
"""

from __future__ import annotations

import os
import pstats
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import pct
from bench.scale import procstat
from novanet_core.api.client import ApiClient, Unreachable
from tests.support.node import NodeUnderTest

NAMESPACES = 100
APPS = 30  # distinct app labels per namespace


def _ip(node: int, host: int) -> str:
    return f"10.{node // 256}.{node % 256}.{host}"


def objects(nodes: int, pods: int, policies: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(nodes):
        out.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{n}"},
                    "spec": {"podCIDR": f"{_ip(n, 0)}/24"},
                    "status": {"addresses": [{"type": "InternalIP", "address": f"172.20.{n // 250}.{n % 250 + 2}"}]}})
    for ns in range(NAMESPACES):
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{ns}", "labels": {"team": f"t{ns % 10}"}}})
    for i in range(pods):
        out.append(pod(i, nodes))
    for k in range(policies):
        ns = k % NAMESPACES
        peer: dict[str, Any] = {"podSelector": {"matchLabels": {"app": f"app-{(k + 1) % APPS}"}}}
        if k % 5 == 0:  # one in five reaches across namespaces
            peer = {"namespaceSelector": {"matchLabels": {"team": f"t{k % 10}"}}, **peer}
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"pol-{k}", "namespace": f"ns-{ns}"},
                    "spec": {"podSelector": {"matchLabels": {"app": f"app-{k % APPS}"}}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": 8000 + k % 50}]}]}})
    return out


def pod(i: int, nodes: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    node, slot = i % nodes, i // nodes
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p-{i}", "namespace": f"ns-{i % NAMESPACES}",
                         "labels": labels or {"app": f"app-{i % APPS}"}},
            "spec": {"nodeName": f"node-{node}"},
            "status": {"podIP": _ip(node, 2 + slot % 250), "hostIP": f"172.20.{node // 250}.{node % 250 + 2}",
                       "phase": "Running"}}


def _wait(fn: Any, timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
        except Unreachable:
            v = None
        if v:
            return v
        time.sleep(step)
    raise TimeoutError("condition not met")


def _profile_top(path: Path, n: int = 25) -> list[dict[str, Any]]:
    """The agent's main thread (state source's list, start-up) by cumulative time."""
    st = pstats.Stats(str(path))
    rows = []
    for (file, line, fn), (_cc, calls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"fn": f"{Path(file).name}:{line}:{fn}", "calls": calls, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
    return sorted(rows, key=lambda r: -r["cumtime_s"])[:n]


def one(nodes: int, pods: int, policies: int, events: int, profile: Path | None = None) -> dict[str, Any]:
    from novanet_kube_source.testing import FakeKubeAPI

    node = NodeUnderTest(datapath="ebpf", pod_cidr=f"{_ip(0, 0)}/24",
                         extra={"clusterCIDR": "10.0.0.0/8", "serviceCIDR": "172.16.0.0/16", "nodeName": "node-0",
                                "stateSource": {"type": "kubernetes"}})
    api = FakeKubeAPI(netns=node.ns).start()
    try:
        for obj in objects(nodes, pods, policies):
            api.put(obj)
        node.set_config({"pluginSettings": {"kubernetes-source": {"apiServer": api.url, "watchTimeoutSeconds": 300}}})
        node._spawn("dataplane")
        try:
            _wait(lambda: ApiClient(node.config["sockets"]["dataplane"], timeout=5).call("dp.status"), 300)
        except TimeoutError:
            raise RuntimeError(f"dataplane did not come up:\n{node.log('dataplane')}") from None
        remote = pods - len(range(0, pods, nodes))  # pods on node-0 are local (no CNI ADD here: no endpoint)
        t0 = time.monotonic()
        # cProfile writes its file when the agent exits (node.close() sends SIGTERM).
        node._spawn("agent", (sys.executable, "-m", "cProfile", "-o", str(profile)) if profile else ())
        try:
            _wait(lambda: node.call("status").get("ready"), 600, 0.02)
        except TimeoutError:
            raise RuntimeError(f"agent not ready:\n{node.log('agent')}") from None
        ready = time.monotonic() - t0
        st = node.call("status")
        pid = procstat.daemon_pid(node.procs["agent"])
        time.sleep(1.0)
        mem = procstat.memory(pid)
        before = node.call("state.timings").get("Pod", {}).get("count", 0)
        # single events, one at a time, each waited for: relabel, add, delete
        t_ev = time.monotonic()
        for j in range(events):
            i = (j * 7919) % pods
            kind = j % 3
            if kind == 0:
                api.put(pod(i, nodes, {"app": f"app-{(i + 1) % APPS}", "rev": str(j)}))
            elif kind == 1:
                api.put(pod(pods + j, nodes))
            else:
                api.delete("Pod", f"p-{pods + j - 1}", f"ns-{(pods + j - 1) % NAMESPACES}")
            want = before + j + 1
            _wait(lambda w=want: node.call("state.timings").get("Pod", {}).get("count", 0) >= w, 30, 0.002)
        events_wall = time.monotonic() - t_ev
        timings = node.call("state.timings")
        log = (node.dir / "agent.log").read_text().splitlines()
        return {"post_start_resyncs": sum("resyncing" in line for line in log), "dataplane_resyncs": st.get("dataplaneResyncs"),"nodes": nodes, "pods": pods, "policies": policies, "remote_pods_expected": remote,
                "remote_pods": st["remoteEndpoints"], "tunnels": st["tunnels"], "policies_seen": st["policies"],
                "full_sync_s": round(ready, 2), "agent_rss_mib": mem.rss_mib,
                "agent_anon_mib": round(mem.anon_kib / 1024, 1), "agent_hwm_mib": round(mem.hwm_kib / 1024, 1),
                "pod_event": timings.get("Pod", {}), "events_wall_per_event_ms": round(events_wall / max(events, 1) * 1e3, 2)}
    finally:
        if profile is not None and "agent" in node.procs:
            # Before close(): it gives a process 10 s, and writing the profile can take longer.
            os.killpg(node.procs["agent"].pid, signal.SIGTERM)
            node.procs["agent"].wait(300)
            shutil.copy(node.dir / "agent.log", profile.with_suffix(".agent.log"))
        node.close()
        api.stop()


def run(nodes: int, pods: int, policies: int, events: int, fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
        profile: Path | None = None) -> dict[str, Any]:
    rows = []
    if profile is not None:
        profile.parent.mkdir(exist_ok=True)
    for f in fractions:
        n, p, k = max(2, int(nodes * f)), max(10, int(pods * f)), max(1, int(policies * f))
        prof = profile.with_suffix(f".{p}.prof") if profile else None
        row = one(n, p, k, events, prof)
        if prof is not None:
            row["profile_top"] = _profile_top(prof)
        rows.append(row)
        print(f"  {n} nodes, {p} pods, {k} policies: full sync {row['full_sync_s']} s, agent RSS {row['agent_rss_mib']} MiB"
              f" (remote pods {row['remote_pods']}/{row['remote_pods_expected']}), pod event p50 "
              f"{row['pod_event'].get('p50_ms')} ms p99 {row['pod_event'].get('p99_ms')} ms", flush=True)
    small, big = rows[0], rows[-1]
    slope = ((big["agent_rss_mib"] - small["agent_rss_mib"]) * 1024 /
             max(1, big["remote_pods"] - small["remote_pods"]))
    return {"rows": rows, "kib_per_remote_pod": round(slope, 2),
            "pod_event_p50_ms": pct([r["pod_event"].get("p50_ms", 0) for r in rows[-1:]], 50)}
