"""Pods per node: one node filled to 10, 110 and 250 pods (cheap netns without servers).

At every step: agent and dataplane RSS and idle CPU, the BPF map memory, the latency of the ADDs
that filled the step (NovaNet next to the reference ``bridge`` + ``host-local`` filling its own
bridge to the same count in the same run), and ``novanetctl status`` latency.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from typing import Any

from bench.cni_add_del import exec_plugin
from bench.common import pct
from bench.scale import procstat
from novanet_core.cni.install import install
from tests.support.node import BIN, NodeUnderTest, sh

STEPS = (10, 110, 250)


class Filler:
    """Adds pods to one plugin's node, one netns each, and remembers them for cleanup."""

    def __init__(self, binary: str, node_ns: str, conf: dict[str, Any], tag: str):
        self.binary, self.node_ns, self.conf, self.tag = binary, node_ns, conf, tag
        self.netns: list[str] = []

    def add(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            name = f"nvs-{self.tag}-{len(self.netns)}"
            sh("ip", "netns", "add", name)
            self.netns.append(name)
            env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"{uuid.uuid4().hex}",
                   "CNI_NETNS": f"/run/netns/{name}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
            ms, rc, out = exec_plugin(self.binary, self.node_ns, env, self.conf)
            if rc != 0:
                raise RuntimeError(f"{self.tag}: ADD #{len(self.netns)} failed: {out}")
            times.append(ms)
        return times

    def close(self) -> None:
        for name in self.netns:
            sh("ip", "netns", "del", name, check=False)


def _status_latency(sock: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([str(BIN / "novanetctl"), "--agent-socket", sock, "status", "-o", "json"],
                       capture_output=True, check=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


def run(steps: tuple[int, ...] = STEPS, idle_seconds: float = 5.0, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    node = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.9.0/24", extra=extra)
    ref_ns = f"nvs-ref{uuid.uuid4().hex[:4]}"
    sh("ip", "netns", "add", ref_ns)
    tmp = tempfile.mkdtemp(prefix="novanet-scale-")
    fillers: list[Filler] = []
    rows = []
    try:
        node.start(90)
        install(os.path.join(tmp, "bin"), None)
        nova = Filler(os.path.join(tmp, "bin", "novanet-cni"), node.ns,
                      {"cniVersion": "1.0.0", "name": "novanet", "type": "novanet-cni",
                       "agentSocket": node.config["sockets"]["cni"]}, f"n{node.id}")
        ref = Filler("/usr/lib/cni/bridge", ref_ns,
                     {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "nvsref0",
                      "isGateway": True, "ipMasq": False,
                      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.43.9.0/24"}]],
                               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(tmp, "ref-ipam")}},
                     f"r{node.id}")
        fillers = [nova, ref]
        pids = {name: procstat.daemon_pid(p) for name, p in node.procs.items()}
        have = 0
        for target in steps:
            n_add = nova.add(target - have)
            r_add = ref.add(target - have)
            have = target
            time.sleep(1.0)  # let the ADD burst's logging and GC settle before the idle window
            cpu = procstat.idle_cpu(pids.values(), idle_seconds)
            maps = procstat.map_memory(node.config["bpf"]["root"])
            st = _status_latency(node.config["sockets"]["agent"], 5)
            row: dict[str, Any] = {"pods": target, "add_ms": {"novanet_p50": pct(n_add, 50), "novanet_p99": pct(n_add, 99),
                                                             "reference_p50": pct(r_add, 50),
                                                             "reference_p99": pct(r_add, 99)},
                                   "status_ms_p50": pct(st, 50), "map_bytes": sum(m["bytes"] for m in maps.values())}
            for name, pid in pids.items():
                mem = procstat.memory(pid)
                row[name] = {"rss_mib": mem.rss_mib, "anon_mib": round(mem.anon_kib / 1024, 1),
                             "file_mib": round(mem.file_kib / 1024, 1), "idle_cpu_pct": cpu[pid]}
            rows.append(row)
            print(f"  pods {target}: agent {row['agent']['rss_mib']} MiB ({row['agent']['idle_cpu_pct']} % CPU), "
                  f"dataplane {row['dataplane']['rss_mib']} MiB ({row['dataplane']['idle_cpu_pct']} % CPU), maps "
                  f"{row['map_bytes'] / 2**20:.1f} MiB, ADD p50 {row['add_ms']['novanet_p50']:.1f} ms "
                  f"(reference {row['add_ms']['reference_p50']:.1f}), status {row['status_ms_p50']:.0f} ms", flush=True)
        held = {name: procstat.libraries(pid) for name, pid in pids.items()}
        biggest_maps = sorted(maps.items(), key=lambda kv: -kv[1]["bytes"])[:8]
        return {"rows": rows, "held_kib": held, "maps_at_last_step": dict(biggest_maps)}
    finally:
        for f in fillers:
            f.close()
        node.close()
        sh("ip", "netns", "del", ref_ns, check=False)
        subprocess.run(["rm", "-rf", tmp])
