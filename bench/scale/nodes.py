"""Nodes: labs of 2, 5, 10, ... nodes (overlay, VXLAN, eBPF datapath, no pods), one after another.

Per size: how long ``novanet lab up`` takes and when every node's tunnel map holds every other
node (convergence after up); a node that joins (a Node object written to the manifests, as the
overlay tests do: its agent need not run for the others to build the tunnel) until it is in every
tunnel map; the agent-side cost of that Node event (``state.timings``: tunnel map and routes
programmed); per-node agent and dataplane RSS and idle CPU.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from novanet_lab.manifests import ManifestWriter
from novanet_lab.paths import LabPaths

from bench.scale import procstat
from novanet_core.api.client import ApiClient
from novanet_core.bpf import layouts_c, syscall
from novanet_core.bpf.layouts import TunnelKey

BIN = Path(sys.executable).parent
STEPS = (2, 5, 10, 20)


def _tunnel_ips(paths: LabPaths, node: str) -> set[str]:
    try:
        fd = syscall.obj_get(layouts_c.pin_path(str(paths.node_bpf_root(node)), "tunnels"))
    except FileNotFoundError:
        return set()
    try:
        return {str(ipaddress.IPv4Address(TunnelKey.from_buffer_copy(k).node_ip))
                for k in syscall.map_keys(fd, ctypes.sizeof(TunnelKey))}
    finally:
        os.close(fd)


def _lab(*args: str, name: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "novanet"), "lab", *args, "--name", name], capture_output=True, text=True,
                          timeout=timeout)


def one(n: int, idle_seconds: float) -> dict[str, Any]:
    name = f"sc{os.getpid() % 10000}n{n}"
    spec = {"name": name, "cluster": {"routingMode": "overlay", "tunnelProtocol": "vxlan", "datapath": "ebpf"},
            "nodes": [{"name": f"node-{i + 1}"} for i in range(n)], "namespaces": [], "pods": []}
    spec_file = Path(f"/tmp/novanet-scale-{name}.yaml")
    spec_file.write_text(yaml.safe_dump(spec))
    paths = LabPaths(name)
    try:
        t0 = time.monotonic()
        r = _lab("up", "--spec", str(spec_file), "-q", "-o", "json", "--timeout", "900", name=name)
        up = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"lab up ({n} nodes) failed:\n{r.stderr[-3000:]}")
        status = json.loads(r.stdout)
        nodes = {x["name"]: x for x in status["nodes"]}
        ips = {x["ip"] for x in nodes.values()}
        while not all(ips - {nodes[m]["ip"]} <= _tunnel_ips(paths, m) for m in nodes):
            if time.monotonic() - t0 > 900:
                raise TimeoutError("tunnel maps did not converge")
            time.sleep(0.02)
        converged = time.monotonic() - t0
        pids = {m: (x["agent"]["pid"], x["dataplane"]["pid"]) for m, x in nodes.items()}
        time.sleep(1.0)
        cpu = procstat.idle_cpu([p for pair in pids.values() for p in pair], idle_seconds)
        mem = {p: procstat.memory(p) for pair in pids.values() for p in pair}
        # a node joins
        mw = ManifestWriter(paths.manifest_dir)
        new_ip = "172.30.0.250"
        mw.write({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-joined"},
                  "spec": {"podCIDR": "10.42.250.0/24"},
                  "status": {"addresses": [{"type": "InternalIP", "address": new_ip}]}})
        t1 = time.monotonic()
        mw.bump()
        while not all(new_ip in _tunnel_ips(paths, m) for m in nodes):
            if time.monotonic() - t1 > 300:
                raise TimeoutError("joined node not in every tunnel map")
            time.sleep(0.005)
        joined = time.monotonic() - t1
        node_event_ms = []
        for m in nodes:
            with ApiClient(str(paths.socket(m, "agent")), timeout=10) as c:
                t = c.call("state.timings").get("Node", {})
            if t:
                node_event_ms.append(t["p50_ms"])
        agents = [mem[a] for a, _ in pids.values()]
        dps = [mem[d] for _, d in pids.values()]
        return {"nodes": n, "up_s": round(up, 2), "converged_s": round(converged, 2), "join_s": round(joined, 3),
                "node_event_p50_ms": round(statistics.median(node_event_ms), 2) if node_event_ms else None,
                "agent_rss_mib": round(statistics.mean(m.rss_kib for m in agents) / 1024, 1),
                "dataplane_rss_mib": round(statistics.mean(m.rss_kib for m in dps) / 1024, 1),
                "total_rss_mib": round(sum(m.rss_kib for m in mem.values()) / 1024, 1),
                "agent_idle_cpu_pct": round(statistics.mean(cpu[a] for a, _ in pids.values()), 2),
                "dataplane_idle_cpu_pct": round(statistics.mean(cpu[d] for _, d in pids.values()), 2),
                "all_idle_cpu_pct": round(sum(cpu.values()), 1)}
    finally:
        _lab("down", "-q", name=name, timeout=600)
        spec_file.unlink(missing_ok=True)


def run(steps: tuple[int, ...] = STEPS, idle_seconds: float = 5.0) -> dict[str, Any]:
    rows = []
    for n in steps:
        row = one(n, idle_seconds)
        rows.append(row)
        print(f"  {n} nodes: up {row['up_s']} s, converged {row['converged_s']} s, join {row['join_s']} s "
              f"(Node event {row['node_event_p50_ms']} ms), agent {row['agent_rss_mib']} MiB / dataplane "
              f"{row['dataplane_rss_mib']} MiB per node, idle CPU all daemons {row['all_idle_cpu_pct']} %", flush=True)
    return {"rows": rows}
