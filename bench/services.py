"""Benchmark of Service load-balancing (needs root; ~6 min with the defaults).

  python -m bench.services [--seconds 4] [--rounds 3] [--counts 1,1000,10000] [--phases ebpf,iptables,nftables] [--json]

One node netns, client pod a, server pod b (tests/bpf/topo.py), ``net.ipv4.ip_forward=1`` as on
a Kubernetes node. For each number of Services programmed (the measured one plus N-1 others,
each with one backend), in the same run and interleaved round by round:

* ``direct``: straight to the pod IP (the baseline every ratio is against);
* ``ebpf-packet``: through the ClusterIP, client outside the node's cgroup: per-packet translation
  in nv_from_pod;
* ``ebpf-socket``: through the ClusterIP, client in the node's cgroup: connect4 translation;
* ``iptables``, ``nftables``: ``kubeProxyReplacement: false`` and kube-proxy's rules for the same
  Services in that mode, written by the lab's kube-proxy emulation (novanet_lab.kubeproxy, the
  shapes of pkg/proxy/iptables and pkg/proxy/nftables), the measured Service sorted last: in
  iptables mode KUBE-SERVICES is one rule per Service port evaluated in order (what grows with the
  count), in nftables mode one verdict-map lookup. Each is measured in its own phase (the rules of
  both cannot be in the netns at once), interleaved round by round with ``direct`` again; its
  ratios are against that phase's ``direct``.

Measured: iperf3 single-stream TCP throughput (``-A 0,1``) and the TCP connect rate (a Python
client opening and resetting connections for ``--seconds`` against a server that accepts and
closes). Then the datapath's side of a Service change: ``dp.service.upsert`` round trips over the
dataplane API for endpoint changes with the largest count programmed (p50/p99), the part of the
agent's change-to-datapath latency after resolution, and the whole way through an agent (EndpointSlice event taken in -> dataplane
acknowledgement, the agent's own ``services.status`` figure); and how evenly the random backend pick
spreads 10,000 connections over 4 backends (chi-square against uniform). Goals (issue): throughput >= 0.98x and
connect rate >= 0.9x of direct, flat across counts (>= 0.97x of 1 Service), p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from novanet_ebpf_policy.backend import EbpfDatapath
from novanet_lab import kubeproxy
from novanet_lab.kubeproxy.model import KPEndpoint, KPServicePort

from bench.common import pct, save
from novanet_core.api.client import ApiClient
from novanet_core.api.server import ApiServer
from novanet_core.backends import BackendContext
from novanet_core.bpf import bpffs
from novanet_core.bpf.netns import netns
from novanet_core.config.models import NovaNetConfig
from novanet_core.dataplane.service import DataplaneService
from novanet_core.types import ServiceBackend, ServiceFrontend
from tests.bpf.topo import Topology, sh
from tests.support import cgroups

VIP = "10.96.0.10"
IPERF_PORT = 5201
CONNECT_PORT = 7100

# accepts and closes (the client resets, so neither side keeps TIME_WAIT state)
_ACCEPTOR = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {CONNECT_PORT})); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

# one listener per backend port; each connection is answered with the port it reached
_PORTS_SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096)
    while True:
        c, _ = s.accept(); c.sendall(str(port).encode()); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

_TALLY = """
import collections, json, socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
got = collections.Counter()
for _ in range(n):
    try:  # a connection lost on a loaded machine is counted, not fatal
        c = socket.create_connection((ip, port), timeout=5); got[c.recv(16).decode()] += 1; c.close()
    except OSError:
        got["error"] += 1
print(json.dumps(got))
"""

_CONNECTOR = """
import socket, struct, sys, time
ip, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
linger = struct.pack("ii", 1, 0)
n = err = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.settimeout(2)  # a lost SYN counts as an error instead of stalling the run on its retries
    try:
        s.connect((ip, port)); n += 1
    except OSError:
        err += 1
    s.close()
print(n / secs, err)
"""


def _vip(i: int) -> str:
    """The i-th extra Service's ClusterIP (10.100.0.0/14; the measured one is VIP)."""
    return f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"


def frontend(ip: str, port: int, backend: str, bport: int, key: str) -> ServiceFrontend:
    return ServiceFrontend(key=key, namespace="bench", name=key.split("/")[1].split(":")[0], port_name="",
                           protocol="TCP", ip=ip, port=port, kind="ClusterIP",
                           backends=[ServiceBackend(ip=backend, port=bport, local=True)])


# ------------------------------------------------------------------ kube-proxy's rules


def kp_ports(services: list[tuple[str, int, str, int]]) -> list[KPServicePort]:
    """kube-proxy's view of ``(ip, port, backend ip, backend port)`` TCP Services (one local
    ready endpoint each), named so that the lab's renderers (which sort by name) put them in order."""
    return [KPServicePort(name=f"bench/s{i:06d}:tcp", protocol="tcp", cluster_ip=ip, port=port, node_port=0,
                          affinity_seconds=0, internal_local=False, external_local=False,
                          endpoints=[KPEndpoint(ip=bip, port=bport, local=True, ready=True, serving=True,
                                                terminating=False)])
            for i, (ip, port, bip, bport) in enumerate(services)]


# ------------------------------------------------------------------ measurements


def iperf(topo: Topology, ip: str, port: int, seconds: int, cgroup: str | None) -> float:
    argv = ["nsenter", f"--net=/run/netns/{topo.pods['a'].ns}", "iperf3", "-c", ip, "-p", str(port), "-t",
            str(seconds), "-A", "0,1", "-J"]
    if cgroup:
        argv = cgroups.argv_in(cgroup, argv)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def connect_rate(topo: Topology, ip: str, port: int, seconds: float, cgroup: str | None) -> float:
    argv = ["nsenter", f"--net=/run/netns/{topo.pods['a'].ns}", "python3", "-c", _CONNECTOR, ip, str(port),
            str(seconds)]
    if cgroup:
        argv = cgroups.argv_in(cgroup, argv)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout.split()
    if int(out[1]):
        print(f"connect rate to {ip}:{port}: {out[1]} connects failed", file=sys.stderr)
    return float(out[0])


class Bench:
    def __init__(self, topo: Topology, dp: EbpfDatapath, seconds: int):
        self.topo, self.dp, self.seconds = topo, dp, seconds
        self.b = topo.pods["b"]
        self.programmed = 0

    def program(self, count: int) -> None:
        """``count`` Services: the measured VIP (both ports) plus count-1 others (more are deleted)."""
        b = self.b.ip
        self.dp.upsert_service(frontend(VIP, IPERF_PORT, b, IPERF_PORT, "bench/m:iperf/TCP"))
        self.dp.upsert_service(frontend(VIP, CONNECT_PORT, b, CONNECT_PORT, "bench/m:conn/TCP"))
        for i in range(self.programmed, count - 1):
            self.dp.upsert_service(frontend(_vip(i), 80, b, 8080, f"bench/s{i}:80/TCP"))
        for i in range(count - 1, self.programmed):
            self.dp.delete_service(f"bench/s{i}:80/TCP")
        self.programmed = count - 1

    def kube_proxy_rules(self, mode: str, count: int) -> None:
        """kube-proxy's ``mode`` rules for the measured Service and count-1 others (none: remove)."""
        b = self.b.ip
        svcs = [(_vip(i), 80, b, 8080) for i in range(count - 1)]
        svcs += [(VIP, IPERF_PORT, b, IPERF_PORT), (VIP, CONNECT_PORT, b, CONNECT_PORT)]
        ns = f"--net=/run/netns/{self.topo.node}"
        sh("nsenter", ns, "iptables", "-t", "nat", "-F")
        sh("nsenter", ns, "iptables", "-t", "nat", "-X")
        sh("nsenter", ns, "iptables", "-t", "filter", "-F")
        sh("nsenter", ns, "iptables", "-t", "filter", "-X")
        sh("nsenter", ns, "nft", "delete", "table", "ip", "kube-proxy", check=False)
        if mode != "none":
            kubeproxy.install(self.topo.node, mode, kp_ports(svcs), "10.42.0.0/16", "10.96.0.0/12")

    def kube_proxy(self, on: bool) -> None:
        self.dp.configure({"kubeProxyReplacement": not on})

    def measure(self, mode: str) -> tuple[float, float]:
        ip = self.b.ip if mode == "direct" else VIP
        cg = self.topo.cgroup if mode == "ebpf-socket" else None
        return (iperf(self.topo, ip, IPERF_PORT, self.seconds, cg),
                connect_rate(self.topo, ip, CONNECT_PORT, self.seconds, cg))


HOOK_PROGRAMS = ("nv_from_pod", "nv_to_pod", "nv_sock_connect4")


def hook_cost(bench: Bench, counts: list[int], rounds: int) -> dict[str, Any]:
    """What the connect path costs in BPF per Service count, in the order given (``10000,1``
    tells a cost that grows with the count from one that grows with what earlier connections
    left in the LRU maps): connect-rate runs per mode, interleaved, and each hook program's runs
    per connection and ns per run (``kernel.bpf_stats_enabled``) over those runs."""
    from novanet_core.bpf import stats

    out: dict[str, Any] = {"stats_enabled": stats.stats_enabled(), "runs": []}
    modes = ("direct", "ebpf-packet", "ebpf-socket")
    for count in counts:
        bench.program(count)
        acc = {m: {"cps": [], "conns": 0, "progs": {p: [0, 0] for p in HOOK_PROGRAMS}} for m in modes}
        for _ in range(rounds):
            for mode in modes:
                ip = bench.b.ip if mode == "direct" else VIP
                cg = bench.topo.cgroup if mode == "ebpf-socket" else None
                before = {p["name"]: p for p in bench.dp.programs()}
                cps = connect_rate(bench.topo, ip, CONNECT_PORT, bench.seconds, cg)
                after = {p["name"]: p for p in bench.dp.programs()}
                a = acc[mode]
                a["cps"].append(round(cps))
                a["conns"] += round(cps * bench.seconds)
                for p in HOOK_PROGRAMS:
                    a["progs"][p][0] += after[p]["run_cnt"] - before[p]["run_cnt"]
                    a["progs"][p][1] += after[p]["run_time_ns"] - before[p]["run_time_ns"]
        res: dict[str, Any] = {"services": count, "entries": bench.dp.service_status()["entries"]}
        for mode, a in acc.items():
            res[mode] = {"cps": a["cps"], "cps_ratio": round(statistics.fmean(a["cps"]) / statistics.fmean(acc["direct"]["cps"]), 3),
                         "programs": {p: {"runs_per_conn": round(n / max(a["conns"], 1), 2),
                                          "ns_per_run": round(t / n, 1) if n else None}
                                      for p, (n, t) in a["progs"].items()}}
        out["runs"].append(res)
    return out


def spread(dp: EbpfDatapath, topo: Topology, backends: int, n: int) -> dict[str, Any]:
    """``n`` connections to a Service of ``backends`` backends (ports of pod b), on each path:
    how evenly the random pick spreads them (chi-square against uniform, max/min count)."""
    ports = [7200 + i for i in range(backends)]
    srv = topo.pods["b"].popen("python3", "-c", _PORTS_SERVER, *map(str, ports))
    out: dict[str, Any] = {"backends": backends, "connections": n}
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        fe = ServiceFrontend(key="bench/spread:80/TCP", namespace="bench", name="spread", port_name="",
                             protocol="TCP", ip=VIP, port=80, kind="ClusterIP",
                             backends=[ServiceBackend(ip=topo.pods["b"].ip, port=p, local=True) for p in ports])
        dp.upsert_service(fe)
        for path, cg in (("packet", None), ("socket", topo.cgroup)):
            argv = ["nsenter", f"--net=/run/netns/{topo.pods['a'].ns}", "python3", "-c", _TALLY, VIP, "80", str(n)]
            if cg:
                argv = cgroups.argv_in(cg, argv)
            counts = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True,
                                               timeout=600).stdout)
            c = [counts.get(str(p), 0) for p in ports]
            expect = sum(c) / backends  # over the connections that were made
            chi2 = sum((x - expect) ** 2 / expect for x in c)
            # chi-square 95th percentile for (backends - 1) degrees of freedom (3 -> 7.815)
            out[path] = {"counts": c, "errors": counts.get("error", 0), "chi2": round(chi2, 2),
                         "max_min": round(max(c) / max(min(c), 1), 3)}
        dp.delete_service(fe.key)
    finally:
        srv.kill()
        srv.wait()
    return out


def change_latency(dp: EbpfDatapath, topo: Topology, sock: str, n: int) -> dict[str, float]:
    """``dp.service.upsert`` round trips, alternating the measured frontend's backend port
    (each one a new bank and a switch)."""
    b = topo.pods["b"].ip
    lat = []
    with ApiClient(sock, timeout=30) as c:
        for i in range(n):
            fe = frontend(VIP, 9999, b, 9000 + i % 2, "bench/m:change/TCP").to_dict()
            t0 = time.perf_counter()
            c.call("dp.service.upsert", {"frontend": fe})
            lat.append((time.perf_counter() - t0) * 1000)
    return {"n": n, "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(max(lat), 2)}


def agent_latency(count: int, changes: int) -> dict[str, Any]:
    """The whole way: a node's agent and dataplane (tests/support/node.py, manifests state
    source) with ``count`` Services and their EndpointSlices; ``changes`` times the backend of one
    Service's slice goes unready or ready again (an override of its slice in a later manifest file:
    exactly one EndpointSlice MODIFIED per change). Two figures per change: the agent's own (from
    the moment it takes the event in to the dataplane's acknowledgement, ``services.status``) and
    the bench's wall clock from the manifest written to the agent reporting it programmed, which
    adds the manifest source's poll (every 50 ms) and this loop's (every 5 ms)."""
    from tests.support.node import NodeUnderTest

    def objs(i: int, ready: bool) -> list[dict[str, Any]]:
        name = f"s{i}"
        return [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bench"},
                 "spec": {"clusterIP": _vip(i), "ports": [{"port": 80, "protocol": "TCP"}]}},
                {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": f"{name}-1", "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
                 "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
                 "endpoints": [{"addresses": ["10.42.7.10"], "conditions": {"ready": ready}}]}]

    node = NodeUnderTest(datapath="ebpf", prefix="nvb")
    try:
        node.write_manifest("ns.yaml", [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}])
        node.write_manifest("services.yaml", [o for i in range(count) for o in objs(i, True)])
        t0 = time.monotonic()
        node.start(wait=600)
        deadline = time.monotonic() + 600
        while node.call("services.status")["programmedFrontends"] < count and time.monotonic() < deadline:
            time.sleep(0.2)
        ready_s = time.monotonic() - t0
        done = node.call("services.status")["programming"]["count"]
        wall = []
        for n in range(changes):
            # sorts after services.yaml, so its copy of s0's slice wins
            node.write_manifest("zz-change.yaml", objs(0, n % 2 == 1)[1:])
            t0 = time.monotonic()
            while node.call("services.status")["programming"]["count"] <= done and time.monotonic() - t0 < 30:
                time.sleep(0.005)
            wall.append((time.monotonic() - t0) * 1000)
            done = node.call("services.status")["programming"]["count"]
        st = node.call("services.status")
        agent = [r["seconds"] * 1000 for r in st["recent"] if not r["full"]][-changes:]
        return {"services": count, "changes": changes, "frontends": st["frontends"], "ready_s": round(ready_s, 1),
                "p50_ms": round(pct(agent, 50), 2), "p99_ms": round(pct(agent, 99), 2), "max_ms": round(max(agent), 2),
                "wall_p50_ms": round(pct(wall, 50), 2), "wall_p99_ms": round(pct(wall, 99), 2),
                "wall_max_ms": round(max(wall), 2)}
    finally:
        node.close()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--counts", default="1,1000,10000")
    ap.add_argument("--changes", type=int, default=500)
    ap.add_argument("--spread", type=int, default=10000, help="connections for the backend-spread measurement")
    ap.add_argument("--agent-changes", type=int, default=200, help="EndpointSlice changes through an agent (0: skip)")
    ap.add_argument("--agent-counts", default="",
                    help="Service counts of the agent measurement, one node each (default: the largest of --counts)")
    ap.add_argument("--agent-only", action="store_true", help="only the measurement through an agent")
    ap.add_argument("--hook-cost", action="store_true",
                    help="only the connect path's BPF cost per count (--counts in the order given)")
    ap.add_argument("--phases", default="ebpf,iptables,nftables",
                    help="which phases to run per count (ebpf: direct, per packet, socket level; iptables, nftables: "
                         "direct and kube-proxy's rules); a count given twice (1,10000,1) is measured twice")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/services.py needs root (netns, BPF, iptables, nft)")
    counts = [int(c) for c in args.counts.split(",")]
    agent_counts = [int(c) for c in args.agent_counts.split(",")] if args.agent_counts else [max(counts)]
    bpffs.ensure_mounted()
    if args.agent_only:
        return agent_main(agent_counts, args.agent_changes, args.json)
    topo = Topology().create(n_pods=2)
    result: dict[str, Any] = {"kernel": os.uname().release, "load_before": loadavg(), "seconds": args.seconds,
                              "rounds": args.rounds, "counts": {}}
    servers: list[subprocess.Popen[str]] = []
    try:
        sh("nsenter", f"--net=/run/netns/{topo.node}", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        b = topo.pods["b"]
        servers.append(b.popen("iperf3", "-s", "-p", str(IPERF_PORT)))
        acc = b.popen("python3", "-c", _ACCEPTOR)
        servers.append(acc)
        assert acc.stdout is not None and acc.stdout.readline().strip() == "ready"
        cfg = NovaNetConfig.model_validate(topo.config())
        sock = os.path.join(tempfile.mkdtemp(prefix="nv-bench-svc-"), "dataplane.sock")
        with netns(topo.node):
            dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
            dp.start()
            server = ApiServer(sock, DataplaneService(dp).router())
            server.start()
            try:
                dp.configure(topo.settings())
                for p in topo.pods.values():
                    dp.upsert_endpoint(p.endpoint(topo.gateway))
                time.sleep(0.5)
                bench = Bench(topo, dp, args.seconds)
                if args.hook_cost:
                    result["hook_cost"] = hook_cost(bench, counts, args.rounds)
                    counts = []
                all_phases = {"ebpf": ["direct", "ebpf-packet", "ebpf-socket"], "iptables": ["direct", "iptables"],
                              "nftables": ["direct", "nftables"]}
                wanted = args.phases.split(",")
                if not wanted or any(w not in all_phases for w in wanted):
                    sys.exit(f"--phases: {args.phases!r}: each of {', '.join(all_phases)}")
                phases = {k: v for k, v in all_phases.items() if k in wanted}
                for count in counts:
                    t0 = time.perf_counter()
                    bench.program(count)
                    prog_s = time.perf_counter() - t0
                    res: dict[str, Any] = {"program_s": round(prog_s, 2), "load": loadavg()}
                    for phase, modes in phases.items():
                        t0 = time.perf_counter()
                        bench.kube_proxy_rules(phase if phase != "ebpf" else "none", count)
                        if phase != "ebpf":
                            res[f"{phase}_sync_s"] = round(time.perf_counter() - t0, 2)
                        bench.kube_proxy(phase != "ebpf")
                        runs: dict[str, dict[str, list[float]]] = {m: {"gbps": [], "cps": []} for m in modes}
                        for _ in range(args.rounds):
                            for mode in modes:
                                g, c = bench.measure(mode)
                                runs[mode]["gbps"].append(round(g, 2))
                                runs[mode]["cps"].append(round(c))
                        base_g = statistics.fmean(runs["direct"]["gbps"])
                        base_c = statistics.fmean(runs["direct"]["cps"])
                        for m, r in runs.items():
                            res[m if m != "direct" else f"direct-{phase}"] = {
                                **r, "gbps_ratio": round(statistics.fmean(r["gbps"]) / base_g, 3),
                                "cps_ratio": round(statistics.fmean(r["cps"]) / base_c, 3)}
                    bench.kube_proxy_rules("none", count)
                    bench.kube_proxy(False)
                    step = str(count)
                    while step in result["counts"]:  # the same count again later in the run
                        step += "'"
                    result["counts"][step] = res
                if not args.hook_cost:
                    result["spread"] = spread(dp, topo, 4, args.spread)
                    result["change_latency"] = change_latency(dp, topo, sock, args.changes)
                    result["frontends"] = dp.service_status()["entries"]["frontends"]
            finally:
                server.stop()
                dp.stop()
    finally:
        for s in servers:
            s.kill()
            s.wait()
        topo.destroy()
    if args.agent_changes and not args.hook_cost:
        result["agent_latency"] = [agent_latency(c, args.agent_changes) for c in agent_counts]
    result["load_after"] = loadavg()
    save("services-hooks" if args.hook_cost else "services", result)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"kernel {result['kernel']}, load {result['load_before']} -> {result['load_after']}")
    if args.hook_cost:
        return print_hook_cost(result["hook_cost"])
    for count, r in result["counts"].items():
        syncs = "; ".join(f"kube-proxy {k.removesuffix('_sync_s')} sync {v} s" for k, v in r.items()
                          if k.endswith("_sync_s"))
        print(f"{count} Services (programmed in {r['program_s']} s{'; ' + syncs if syncs else ''}):")
        for m in ("direct-ebpf", "ebpf-packet", "ebpf-socket", "direct-iptables", "iptables", "direct-nftables",
                  "nftables"):
            if m not in r:
                continue
            x = r[m]
            print(f"  {m:15} TCP {x['gbps']} Gbit/s (x{x['gbps_ratio']}), connects/s {x['cps']} (x{x['cps_ratio']})")
    sp = result["spread"]
    for path in ("packet", "socket"):
        print(f"spread over {sp['backends']} backends, {sp['connections']} connections ({path}): {sp[path]['counts']}, "
              f"chi-square {sp[path]['chi2']} (95% critical 7.81 for 3 d.o.f.), max/min {sp[path]['max_min']}")
    cl = result["change_latency"]
    print(f"dp.service.upsert with {result['frontends']} frontends: p50 {cl['p50_ms']} ms, p99 {cl['p99_ms']} ms "
          f"(max {cl['max_ms']} ms, n={cl['n']})")
    for a in result.get("agent_latency", []):
        print_agent(a)


def print_hook_cost(h: dict[str, Any]) -> None:
    print(f"kernel.bpf_stats_enabled: {h['stats_enabled']}")
    for r in h["runs"]:
        print(f"{r['services']} Services ({r['entries']}):")
        for mode in ("direct", "ebpf-packet", "ebpf-socket"):
            x = r[mode]
            progs = ", ".join(f"{p} {v['runs_per_conn']}/conn {v['ns_per_run']} ns" for p, v in x["programs"].items())
            print(f"  {mode:12} connects/s {x['cps']} (x{x['cps_ratio']}); {progs}")


def print_agent(a: dict[str, Any]) -> None:
    print(f"agent, EndpointSlice change -> datapath acknowledged, {a['services']} Services: p50 {a['p50_ms']} ms, "
          f"p99 {a['p99_ms']} ms (max {a['max_ms']} ms, {a['changes']} changes); manifest written -> programmed "
          f"seen: p50 {a['wall_p50_ms']} ms, p99 {a['wall_p99_ms']} ms (max {a['wall_max_ms']} ms); node ready with "
          f"every frontend programmed in {a['ready_s']} s")


def agent_main(counts: list[int], changes: int, as_json: bool) -> None:
    result: dict[str, Any] = {"load_before": loadavg(), "agent_latency": []}
    for c in counts:
        result["agent_latency"].append(agent_latency(c, changes))
    result["load_after"] = loadavg()
    save("services-agent", result)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"load {result['load_before']} -> {result['load_after']}")
    for a in result["agent_latency"]:
        print_agent(a)


if __name__ == "__main__":
    main()
