"""Cross-node pod-to-pod TCP: native routing (BGP + eBPF) vs VXLAN overlay (eBPF) vs plain routing (BGP, no BPF).

Three 2-node labs are up at once and measured round-robin in the same run, so that machine drift
hits every mode alike:

* ``native``: routingMode native, datapath ebpf (frr-bgp routes, eBPF policy programs on pod veths)
* ``vxlan``:  routingMode overlay, tunnelProtocol vxlan, datapath ebpf (the lab's overlay mode)
* ``plain``:  routingMode native, datapath kernel (the same BGP routes, per-pod /32s, no BPF at all)

Per round and mode: one iperf3 single-stream TCP run (pod on node-1 -> pod on node-2, Gbit/s) and
one sockperf TCP ping-pong run (latency; sockperf reports half the round trip, in µs).
Usage: ``sudo .venv/bin/python bench/native_routing.py [--rounds 3] [--seconds 3]`` (root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from novanet_lab.paths import LabPaths

from bench.common import save

BIN = Path(sys.executable).parent
MODES = {
    "native": {"routingMode": "native", "routing": {"type": "frr-bgp", "settings": {"reconcileInterval": 2}}},
    "vxlan": {"routingMode": "overlay", "tunnelProtocol": "vxlan"},
    "plain": {"routingMode": "native", "datapath": "kernel", "routing": {"type": "frr-bgp", "settings": {}}},
}


def spec(name: str, cluster: dict) -> dict:
    return {"name": name, "cluster": {"clusterCIDR": "10.42.0.0/16", **cluster},
            "nodes": [{"name": "node-1"}, {"name": "node-2"}],
            "pods": [{"name": "a", "node": "node-1", "ports": [{"port": 80}]},
                     {"name": "b", "node": "node-2", "ports": [{"port": 80}]}]}


def novanet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(BIN / "novanet"), *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise SystemExit(f"novanet {' '.join(args)} failed:\n{r.stderr}")
    return r


def in_pod(lab: str, pod: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={LabPaths.netns_path(LabPaths(lab).pod_netns('default', pod))}", *argv]


def pod_ip(lab: str, pod: str) -> str:
    st = json.loads(novanet("lab", "status", "--name", lab, "-o", "json").stdout)
    return next(p["ip"] for p in st["pods"] if p["name"] == pod)


def iperf(lab: str, dst: str, seconds: int) -> float:
    out = subprocess.run(in_pod(lab, "a", "iperf3", "-c", dst, "-p", "5201", "-t", str(seconds), "-J"),
                         capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout)
    if "error" in data:
        raise SystemExit(f"iperf3 in {lab}: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def sockperf(lab: str, dst: str, seconds: int) -> dict[str, float]:
    out = subprocess.run(in_pod(lab, "a", "sockperf", "pp", "--tcp", "-i", dst, "-p", "11111", "-t", str(seconds)),
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    avg = re.search(r"avg-latency=([\d.]+)", out)
    p50 = re.search(r"percentile 50\.000 =\s*([\d.]+)", out)
    p99 = re.search(r"percentile 99\.000 =\s*([\d.]+)", out)
    if not (avg and p50 and p99):
        raise SystemExit(f"sockperf in {lab} gave no result:\n{out[-500:]}")
    return {"avg_us": float(avg.group(1)), "p50_us": float(p50.group(1)), "p99_us": float(p99.group(1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    a = ap.parse_args()
    suffix = f"{os.getpid() % 10000}"
    labs = {m: f"bn{m}{suffix}" for m in MODES}
    servers: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, list]] = {m: {"gbps": [], "latency": []} for m in MODES}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for m, lab in labs.items():
                f = Path(tmp) / f"{lab}.yaml"
                f.write_text(yaml.safe_dump(spec(lab, MODES[m])))
                t0 = time.monotonic()
                novanet("lab", "up", "--spec", str(f), "-q")
                print(f"{m}: lab {lab} up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        ips = {m: pod_ip(lab, "b") for m, lab in labs.items()}
        for lab in labs.values():
            servers.append(subprocess.Popen(in_pod(lab, "b", "iperf3", "-s", "-p", "5201"), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
            servers.append(subprocess.Popen(in_pod(lab, "b", "sockperf", "sr", "--tcp", "-p", "11111"),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        for r in range(a.rounds):
            for m, lab in labs.items():
                g = iperf(lab, ips[m], a.seconds)
                lat = sockperf(lab, ips[m], a.seconds)
                results[m]["gbps"].append(round(g, 2))
                results[m]["latency"].append(lat)
                print(f"round {r + 1} {m:6s}: {g:6.2f} Gbit/s, latency avg {lat['avg_us']:.1f} us "
                      f"p50 {lat['p50_us']:.1f} p99 {lat['p99_us']:.1f}", file=sys.stderr)
    finally:
        for s in servers:
            s.kill()
            s.wait()
        for lab in labs.values():
            novanet("lab", "down", "--name", lab, "-q", check=False)
    summary = {}
    for m, res in results.items():
        if not res["gbps"]:
            continue
        summary[m] = {"gbps_median": statistics.median(res["gbps"]), "gbps_runs": res["gbps"],
                      "latency_avg_us_median": statistics.median(x["avg_us"] for x in res["latency"]),
                      "latency_p50_us_median": statistics.median(x["p50_us"] for x in res["latency"]),
                      "latency_p99_us_median": statistics.median(x["p99_us"] for x in res["latency"])}
    if "native" in summary and "plain" in summary:
        summary["native_vs_plain_throughput"] = round(summary["native"]["gbps_median"] / summary["plain"]["gbps_median"], 3)
    path = save("native_routing", {"rounds": a.rounds, "seconds": a.seconds, "results": summary})
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
