"""Cross-node pod-to-pod TCP over the overlays: NovaNet-vxlan and NovaNet-geneve (eBPF datapath) vs
a Flannel-style VXLAN peer (kernel VXLAN devices, routes, FDB/neighbour entries, a bridge; no BPF)
vs no encapsulation (plain routing over the same underlay), all in the same run.

Four two-node setups are up at once and measured round-robin, so machine drift hits every mode
alike. Every setup has the same shape: two node netns on an underlay bridge (MTU 1500), a pod netns
per node, traffic from the pod on node 1 to the pod on node 2.

* ``novanet-vxlan`` / ``novanet-geneve``: ``novanet lab`` with ``datapath: ebpf`` and that
  ``tunnelProtocol`` (pod MTU 1450 / 1442).
* ``flannel``: what Flannel's vxlan backend programs: ``flannel.1`` (VXLAN id 1, UDP 4789,
  nolearning, MTU 1450) with, per remote node, an onlink route of its PodCIDR via its VTEP
  address, a permanent neighbour entry for that address and an FDB entry to the node IP; pods on a
  ``cni0`` bridge as the bridge CNI plugin makes them.
* ``plain``: the same bridge pods, PodCIDR routes via the remote node's underlay address, MTU 1500.

Per round and mode: one iperf3 single-stream TCP run (Gbit/s) and one sockperf TCP ping-pong run
(TCP_RR latency; sockperf reports half the round trip, µs).
Usage: ``sudo .venv/bin/python bench/overlay_throughput.py [--rounds 3] [--seconds 2]`` (root).
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
LAB_MODES = {"novanet-vxlan": "vxlan", "novanet-geneve": "geneve"}
PEER_MODES = ("flannel", "plain")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return r


def ns(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", name, *argv, check=check)


# ----------------------------------------------------------------------------- NovaNet labs
def lab_spec(name: str, protocol: str) -> dict:
    ports = [{"port": 80}]
    return {"name": name, "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay",
                                      "tunnelProtocol": protocol, "datapath": "ebpf"},
            "underlay": {"mtu": 1500}, "nodes": [{"name": "node-1"}, {"name": "node-2"}],
            "pods": [{"name": "a", "node": "node-1", "ports": ports}, {"name": "b", "node": "node-2", "ports": ports}]}


def lab_pod_netns(lab: str, pod: str) -> str:
    return LabPaths(lab).pod_netns("default", pod)


def lab_pod_ip(lab: str, pod: str) -> str:
    st = json.loads(sh(str(BIN / "novanet"), "lab", "status", "--name", lab, "-o", "json").stdout)
    return next(p["ip"] for p in st["pods"] if p["name"] == pod)


# ----------------------------------------------------------------------------- Flannel-style / plain peers
class Peer:
    """Two nodes on an underlay bridge, bridge-CNI pods, and either Flannel's VXLAN or plain routes."""

    def __init__(self, prefix: str, mode: str, idx: int):
        self.p, self.mode = prefix, mode
        self.under = f"{prefix}u"
        self.nodes = [f"{prefix}n1", f"{prefix}n2"]
        self.pods = [f"{prefix}p1", f"{prefix}p2"]
        self.node_ip = [f"172.31.{idx}.1", f"172.31.{idx}.2"]
        self.pod_ip = [f"10.245.{idx * 2 + 1}.2", f"10.245.{idx * 2 + 2}.2"]
        self.cidr = [f"10.245.{idx * 2 + 1}.0/24", f"10.245.{idx * 2 + 2}.0/24"]
        self.gw = [f"10.245.{idx * 2 + 1}.1", f"10.245.{idx * 2 + 2}.1"]

    def up(self) -> None:
        mtu = 1450 if self.mode == "flannel" else 1500
        for n in [self.under, *self.nodes, *self.pods]:
            sh("ip", "netns", "add", n)
            ns(n, "ip", "link", "set", "lo", "up")
        ns(self.under, "ip", "link", "add", "br0", "type", "bridge")
        ns(self.under, "ip", "link", "set", "br0", "up")
        for i, n in enumerate(self.nodes):
            sh("ip", "link", "add", f"{self.p}e{i}", "netns", self.under, "type", "veth", "peer", "name", "eth0",
               "netns", n)
            ns(self.under, "ip", "link", "set", f"{self.p}e{i}", "master", "br0", "up")
            ns(n, "ip", "addr", "add", f"{self.node_ip[i]}/24", "dev", "eth0")
            ns(n, "ip", "link", "set", "eth0", "up")
            ns(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # bridge CNI: cni0 with the gateway, the pod's veth enslaved to it
            ns(n, "ip", "link", "add", "cni0", "type", "bridge")
            ns(n, "ip", "addr", "add", f"{self.gw[i]}/24", "dev", "cni0")
            ns(n, "ip", "link", "set", "cni0", "mtu", str(mtu), "up")
            sh("ip", "link", "add", "veth0", "netns", n, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
               "netns", self.pods[i], "mtu", str(mtu))
            ns(n, "ip", "link", "set", "veth0", "master", "cni0", "up")
            ns(self.pods[i], "ip", "addr", "add", f"{self.pod_ip[i]}/24", "dev", "eth0")
            ns(self.pods[i], "ip", "link", "set", "eth0", "up")
            ns(self.pods[i], "ip", "route", "add", "default", "via", self.gw[i])
        for i, n in enumerate(self.nodes):
            j = 1 - i
            if self.mode == "plain":
                ns(n, "ip", "route", "add", self.cidr[j], "via", self.node_ip[j], "dev", "eth0")
                continue
            ns(n, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", self.node_ip[i], "dev",
               "eth0", "dstport", "4789", "nolearning")
            ns(n, "ip", "link", "set", "flannel.1", "address", f"02:fa:00:00:{i:02x}:01", "mtu", "1450", "up")
            vtep = self.cidr[j].replace(".0/24", ".0")  # flannel gives the VTEP the PodCIDR's .0 address
            ns(n, "ip", "addr", "add", f"{self.cidr[i].replace('.0/24', '.0')}/32", "dev", "flannel.1")
            ns(n, "ip", "neigh", "add", vtep, "lladdr", f"02:fa:00:00:{j:02x}:01", "dev", "flannel.1", "nud",
               "permanent")
            ns(n, "bridge", "fdb", "append", f"02:fa:00:00:{j:02x}:01", "dev", "flannel.1", "dst", self.node_ip[j])
            ns(n, "ip", "route", "add", self.cidr[j], "via", vtep, "dev", "flannel.1", "onlink")

    def down(self) -> None:
        for n in [*self.pods, *self.nodes, self.under]:
            sh("ip", "netns", "del", n, check=False)


# ----------------------------------------------------------------------------- measurements
def iperf(netns: str, ip: str, seconds: int) -> float:
    # client on CPU 0, server on CPU 1 (as bench/bpf_datapath.py): less run-to-run scatter on 2 vCPUs
    r = ns(netns, "iperf3", "-c", ip, "-p", "5201", "-t", str(seconds), "-A", "0,1", "-J", check=False)
    try:
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        raise SystemExit(f"iperf3 from {netns} to {ip} failed: {r.stdout[-400:]} {r.stderr[-400:]}") from None


def sockperf(netns: str, ip: str, seconds: int) -> dict[str, float]:
    r = ns(netns, "sockperf", "pp", "--tcp", "-i", ip, "-p", "11111", "-t", str(seconds), check=False)
    text = r.stdout + r.stderr
    avg = re.search(r"avg-latency=([\d.]+)", text)
    p50 = re.search(r"50\.000 =\s*([\d.]+)", text)
    p99 = re.search(r"99\.000 =\s*([\d.]+)", text)
    if not avg:
        raise SystemExit(f"sockperf from {netns} to {ip} failed: {text[-600:]}")
    return {"avg_us": float(avg[1]), "p50_us": float(p50[1]) if p50 else float("nan"),
            "p99_us": float(p99[1]) if p99 else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=2)
    a = ap.parse_args()
    sfx = f"{os.getpid() % 10000}"
    labs = {m: f"bo{p[0]}{sfx}" for m, p in LAB_MODES.items()}
    peers = {m: Peer(f"bo{m[0]}{sfx}", m, i + 1) for i, m in enumerate(PEER_MODES)}
    servers: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, list]] = {m: {"gbps": [], "latency": []} for m in [*LAB_MODES, *PEER_MODES]}
    targets: dict[str, tuple[str, str, str]] = {}  # mode -> (client netns, server netns, server ip)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for m, lab in labs.items():
                f = Path(tmp) / f"{lab}.yaml"
                f.write_text(yaml.safe_dump(lab_spec(lab, LAB_MODES[m])))
                t0 = time.monotonic()
                sh(str(BIN / "novanet"), "lab", "up", "--spec", str(f), "-q")
                print(f"{m}: lab {lab} up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
                targets[m] = (lab_pod_netns(lab, "a"), lab_pod_netns(lab, "b"), lab_pod_ip(lab, "b"))
        for m, peer in peers.items():
            peer.up()
            targets[m] = (peer.pods[0], peer.pods[1], peer.pod_ip[1])
        for _cli, srv, _ip in targets.values():
            servers.append(subprocess.Popen(["ip", "netns", "exec", srv, "iperf3", "-s", "-p", "5201"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            servers.append(subprocess.Popen(["ip", "netns", "exec", srv, "sockperf", "sr", "--tcp", "-p", "11111"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        for cli, _srv, ip in targets.values():  # warm-up: ARP/neighbours, first flows
            ns(cli, "ping", "-c", "2", "-W", "1", ip, check=False)
        order = list(targets)
        for r in range(a.rounds):
            for m in order[r % len(order):] + order[: r % len(order)]:  # rotate who goes first
                cli, _, ip = targets[m]
                g = iperf(cli, ip, a.seconds)
                lat = sockperf(cli, ip, a.seconds)
                results[m]["gbps"].append(round(g, 2))
                results[m]["latency"].append(lat)
                print(f"round {r + 1} {m:15s}: {g:6.2f} Gbit/s, latency avg {lat['avg_us']:.1f} us "
                      f"p50 {lat['p50_us']:.1f} p99 {lat['p99_us']:.1f}", file=sys.stderr)
    finally:
        for s in servers:
            s.kill()
            s.wait()
        for peer in peers.values():
            peer.down()
        for lab in labs.values():
            sh(str(BIN / "novanet"), "lab", "down", "--name", lab, "-q", check=False)
    summary: dict[str, dict | float] = {}
    for m, res in results.items():
        if res["gbps"]:
            summary[m] = {"gbps_median": statistics.median(res["gbps"]), "gbps_runs": res["gbps"],
                          "latency_avg_us_median": statistics.median(x["avg_us"] for x in res["latency"]),
                          "latency_p50_us_median": statistics.median(x["p50_us"] for x in res["latency"]),
                          "latency_p99_us_median": statistics.median(x["p99_us"] for x in res["latency"])}

    def ratio(x: str, y: str, key: str) -> float | None:
        if x in summary and y in summary:
            return round(summary[x][key] / summary[y][key], 3)  # type: ignore[index]
        return None

    ratios = {
        "vxlan_vs_flannel_throughput": ratio("novanet-vxlan", "flannel", "gbps_median"),  # goal >= 1.0
        "vxlan_vs_flannel_latency": ratio("novanet-vxlan", "flannel", "latency_avg_us_median"),  # goal <= 1.05
        "geneve_vs_flannel_throughput": ratio("novanet-geneve", "flannel", "gbps_median"),  # goal >= 1.1
        "geneve_vs_plain_throughput": ratio("novanet-geneve", "plain", "gbps_median"),  # goal >= 0.97
        "vxlan_vs_flannel_latency_p50": ratio("novanet-vxlan", "flannel", "latency_p50_us_median"),
        "geneve_vs_flannel_latency": ratio("novanet-geneve", "flannel", "latency_avg_us_median"),
        "geneve_vs_flannel_latency_p50": ratio("novanet-geneve", "flannel", "latency_p50_us_median"),
    }
    out = {"rounds": a.rounds, "seconds": a.seconds, "results": summary, "ratios": ratios}
    path = save("overlay_throughput", out)
    print(json.dumps(out, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
