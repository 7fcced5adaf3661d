"""Benchmark of the ebpf datapath on a throwaway netns topology (needs root; ~45 s).

  python -m bench.bpf_datapath [--seconds 4] [--json]

1. ns/packet per program (kernel.bpf_stats_enabled) under a 64-byte UDP flood a->b, with an
   empty program attached in front of nv_from_pod (BPF_F_BEFORE, returns TC_ACT_UNSPEC = next)
   as the measurement floor of this machine.
2. iperf3 single-stream TCP a->b: the datapath (redirect_peer, ip_forward=0) vs bare veth
   routing (no BPF, ip_forward=1, proxy-ARP), same topology, same run; reported as a ratio.
3. Ring-buffer consumer: events/s while a flood hits a deny rule, and the drain rate of a full
   ring backlog (~95 k events); submitted/lost/consumed are reconciled (unaccounted must be 0).
Goals (issue): <=150 ns/pkt, ratio >= 1.0, >= 500 k events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from novanet_ebpf_policy.backend import EbpfDatapath

from novanet_core.backends import BackendContext
from novanet_core.bpf import bpffs, compiler, stats, syscall
from novanet_core.bpf.netns import netns
from novanet_core.config.models import NovaNetConfig
from tests.bpf.topo import Topology, sh

FLOOR_SRC = """
#include <uapi/linux/bpf.h>
int nv_bench_floor(struct __sk_buff *skb) { return -1; }  /* TC_ACT_UNSPEC: run the next program */
"""


def _iperf_tcp(topo: Topology, seconds: int) -> float:
    a, b = topo.pods["a"], topo.pods["b"]
    srv = b.popen("iperf3", "-s", "-1", "-p", "5301")
    try:
        time.sleep(0.3)
        out = a.run("iperf3", "-c", b.ip, "-p", "5301", "-t", str(seconds), "-A", "0,1", "-J", check=False,
                    timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.kill()
        srv.wait()


def _udp_flood(topo: Topology, seconds: int, from_node: bool = False) -> None:
    """64-byte UDP a -> b (nv_from_pod on a's veth, redirect_peer into b), or, with ``from_node``,
    node -> b through the node's routing (nv_to_pod on b's veth egress)."""
    a, b = topo.pods["a"], topo.pods["b"]
    srv = b.popen("iperf3", "-s", "-1", "-p", "5302")
    argv = ["iperf3", "-c", b.ip, "-p", "5302", "-u", "-b", "0", "-l", "64", "-t", str(seconds)]
    try:
        time.sleep(0.3)
        if from_node:
            sh("nsenter", f"--net=/run/netns/{topo.node}", *argv, check=False)
        else:
            a.run(*argv, check=False, timeout=seconds + 30)
    finally:
        srv.kill()
        srv.wait()


def _blast(topo: Topology, seconds: int) -> None:
    """64-byte UDP datagrams a:40000 -> b:9 without a control connection (iperf3 needs one, and a
    profiling variant of nv_from_pod that stops early does not forward it); one flow, always the
    same, so that the variants measure its established path."""
    a, b = topo.pods["a"], topo.pods["b"]
    a.run("python3", "-c", _BLAST.format(secs=seconds, ip=b.ip, size=64, sport=40000), timeout=seconds + 30)


def per_packet(dp: EbpfDatapath, topo: Topology, seconds: int, from_node: bool = False,
               flood: Any = None) -> dict[str, Any]:
    floor = compiler.compile_and_load(FLOOR_SRC, ["nv_bench_floor"], dp.header_tree, dp.root, "floor program")
    ffd = floor.fds["nv_bench_floor"]
    link = syscall.tcx_attach(ffd, socket.if_nametoindex(topo.pods["a"].host_if),
                              ingress=True, flags=syscall.BPF_F_BEFORE)
    prev = stats.set_stats_enabled(True)
    try:
        s0 = {p["name"]: p for p in dp.bpf_stats()["programs"]}
        f0 = stats.prog_stats(ffd)
        if flood is not None:
            flood(topo, seconds)
        else:
            _udp_flood(topo, seconds, from_node)
        s1 = {p["name"]: p for p in dp.bpf_stats()["programs"]}
        f1 = stats.prog_stats(ffd)
    finally:
        stats.set_stats_enabled(prev)
        syscall.link_detach(link)
        os.close(link)
        floor.close()

    def avg(c0: int, c1: int, t0: int, t1: int) -> float | None:
        return round((t1 - t0) / (c1 - c0), 1) if c1 > c0 else None

    out = {"floor_empty_prog": {"runs": f1.run_cnt - f0.run_cnt,
                                "avg_ns": avg(f0.run_cnt, f1.run_cnt, f0.run_time_ns, f1.run_time_ns)}}
    for n in ("nv_from_pod", "nv_to_pod"):
        out[n] = {"runs": s1[n]["run_cnt"] - s0[n]["run_cnt"],
                  "avg_ns": avg(s0[n]["run_cnt"], s1[n]["run_cnt"], s0[n]["run_time_ns"], s1[n]["run_time_ns"])}
    return out


# Where nv_from_pod's time goes: the program is rebuilt with -DNV_PROFILE_STOP=<n>, which returns at
# NV_PROFILE_POINT(n) (datapath.c), and each variant is measured on the same flood. The flow is
# established before (the full program runs first), so the points cut the established-flow path.
PROFILE_POINTS = {1: "parsed (Ethernet, IPv4, L4 ports)", 2: "+ flow-table lookup (revision, veth)",
                  3: "+ destination (the flow entry's copy, or the endpoint lookup)",
                  0: "full (idle clock, L2 rewrite, TTL, redirect_peer)"}


def _variants(dp: EbpfDatapath, topo: Topology, seconds: int, repeat: int,
              variants: dict[Any, dict[str, str] | None]) -> tuple[dict[Any, list[float]], list[float]]:
    """nv_from_pod's ns/packet of each build (``-D`` defines) on the same flood, alternated
    ``repeat`` times, and the floors measured with them. Each build first runs the blast's flow
    (fixed ports) once, so that the flood is an established flow whose entry the full program wrote."""
    rows: dict[Any, list[float]] = {k: [] for k in variants}
    floors: list[float] = []
    try:
        for _ in range(repeat):
            for k, defines in variants.items():
                dp.reload(defines)
                _blast(topo, 1)
                pp = per_packet(dp, topo, seconds, flood=_blast)
                rows[k].append(pp["nv_from_pod"]["avg_ns"])
                floors.append(pp["floor_empty_prog"]["avg_ns"])
    finally:
        dp.reload(None)
    return rows, floors


def sections(dp: EbpfDatapath, topo: Topology, seconds: int, repeat: int) -> dict[str, Any]:
    rows, floors = _variants(dp, topo, seconds, repeat,
                             {k: {"NV_PROFILE_STOP": str(k)} if k else None for k in (0, 1, 2, 3)})
    med = {k: statistics.median(v) for k, v in rows.items()}
    out = []
    prev = statistics.median(floors)
    for k in (1, 2, 3, 0):
        out.append({"point": k, "what": PROFILE_POINTS[k], "gross_ns": round(med[k], 1),
                    "section_ns": round(med[k] - prev, 1), "runs": rows[k]})
        prev = med[k]
    return {"floor_ns": round(statistics.median(floors), 1), "points": out}


def dst_copy(dp: EbpfDatapath, topo: Topology, seconds: int, repeat: int) -> dict[str, Any]:
    """The established path delivering from the flow entry's copy of the destination against the
    same program built with -DNV_NO_DST_COPY (the endpoint lookup instead: the path before the
    copy), alternated on the same flood."""
    rows, floors = _variants(dp, topo, seconds, repeat, {"copy": None, "lookup": {"NV_NO_DST_COPY": "1"}})
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"floor_ns": round(statistics.median(floors), 1), "copy_ns": round(med["copy"], 1),
            "lookup_ns": round(med["lookup"], 1), "ratio_copy_vs_lookup": round(med["copy"] / med["lookup"], 3),
            "runs": rows, "floors": floors}


def throughput(dp: EbpfDatapath, topo: Topology, seconds: int, rounds: int) -> dict[str, Any]:
    a, b = topo.pods["a"], topo.pods["b"]
    res: dict[str, list[float]] = {"bpf": [], "plain": []}
    for _ in range(rounds):
        res["bpf"].append(_iperf_tcp(topo, seconds))
        for p in (a, b):
            dp.attacher.detach(p.host_if)
            sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", f"net.ipv4.conf.{p.host_if}.proxy_arp=1")
        sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        try:
            res["plain"].append(_iperf_tcp(topo, seconds))
        finally:
            sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.ipv4.ip_forward=0")
            for p in (a, b):
                sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", f"net.ipv4.conf.{p.host_if}.proxy_arp=0")
                dp.upsert_endpoint(p.endpoint(topo.gateway))
    mb, mp = sum(res["bpf"]) / rounds, sum(res["plain"]) / rounds
    return {"bpf_gbps": [round(x, 2) for x in res["bpf"]], "plain_gbps": [round(x, 2) for x in res["plain"]],
            "bpf_mean": round(mb, 2), "plain_mean": round(mp, 2), "ratio": round(mb / mp, 3)}


_BLAST = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", {sport}))
end = time.monotonic() + {secs}
while time.monotonic() < end:
    for _ in range(2000):
        s.sendto(b"x" * {size}, ("{ip}", 9))
"""


def ringbuf(dp: EbpfDatapath, topo: Topology, seconds: int) -> dict[str, Any]:
    a, b = topo.pods["a"], topo.pods["b"]
    dp.upsert_policy({"src_identity": a.identity, "dst_identity": b.identity, "protocol": "udp", "action": "deny"})
    f0 = dp.flow_counters()
    t0 = time.monotonic()
    procs = [a.popen("python3", "-c", _BLAST.format(secs=seconds, ip=b.ip, size=18, sport=0)) for _ in range(2)]
    for p in procs:
        p.wait()
    live_t = time.monotonic() - t0
    time.sleep(0.5)
    f1 = dp.flow_counters()
    live = {"consumed_per_s": round((f1["consumed"] - f0["consumed"]) / live_t),
            "submitted": f1["submitted"] - f0["submitted"], "lost": f1["lost"] - f0["lost"],
            "consumed": f1["consumed"] - f0["consumed"]}
    live["unaccounted"] = live["submitted"] - live["consumed"]
    # backlog drain: stop the consumer, fill the ring, restart it and time the drain
    dp.flows.stop()
    a.run("python3", "-c", _BLAST.format(secs=1.5, ip=b.ip, size=18, sport=0), timeout=30)
    f2 = dp.flow_counters()
    backlog = f2["submitted"] - f1["submitted"]
    c0 = dp.flows.consumed
    t0 = time.perf_counter()
    dp.flows.start(dp.maps.fds["flows"])
    while dp.flows.consumed - c0 < backlog and time.perf_counter() - t0 < 30:
        time.sleep(0.001)
    drain_t = time.perf_counter() - t0
    drained = dp.flows.consumed - c0
    dp.sync_policies([])
    return {"live": live, "backlog_events": backlog, "drained": drained,
            "drain_events_per_s": round(drained / drain_t), "lost_while_stopped": f2["lost"] - f1["lost"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dst-copy", type=int, default=0, metavar="N",
                    help="also the fast path's destination copy against the endpoint lookup (N alternations)")
    ap.add_argument("--sections", type=int, default=0, metavar="N",
                    help="also profile nv_from_pod per section (N repetitions of each variant)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/bpf_datapath.py needs root (netns, BPF)")
    bpffs.ensure_mounted()
    topo = Topology().create(n_pods=2)
    result: dict[str, Any] = {"kernel": os.uname().release}
    try:
        cfg = NovaNetConfig.model_validate(topo.config())
        with netns(topo.node):
            dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
            dp.start()
            try:
                dp.configure(topo.settings())
                for p in topo.pods.values():
                    dp.upsert_endpoint(p.endpoint(topo.gateway))
                result["attach_mode"] = dp.attacher.mode
                if args.sections:
                    result["sections"] = sections(dp, topo, args.seconds, args.sections)
                if args.dst_copy:
                    result["dst_copy"] = dst_copy(dp, topo, args.seconds, args.dst_copy)
                result["per_packet_udp64"] = per_packet(dp, topo, args.seconds)
                result["per_packet_udp64_to_pod"] = per_packet(dp, topo, args.seconds, from_node=True)
                result["tcp_single_stream"] = throughput(dp, topo, args.seconds, args.rounds)
                result["ringbuf"] = ringbuf(dp, topo, args.seconds)
            finally:
                dp.stop()
    finally:
        topo.destroy()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    pp = result["per_packet_udp64"]
    print(f"kernel {result['kernel']}, attach {result['attach_mode']}")
    print(f"ns/packet (UDP 64 B): nv_from_pod {pp['nv_from_pod']['avg_ns']} ns over {pp['nv_from_pod']['runs']} runs; "
          f"empty-program floor {pp['floor_empty_prog']['avg_ns']} ns")
    tp = result["per_packet_udp64_to_pod"]
    print(f"ns/packet (UDP 64 B, node -> pod): nv_to_pod {tp['nv_to_pod']['avg_ns']} ns over "
          f"{tp['nv_to_pod']['runs']} runs")
    if "sections" in result:
        print(f"nv_from_pod by section (floor {result['sections']['floor_ns']} ns):")
        for r in result["sections"]["points"]:
            print(f"  {r['what']:<55} gross {r['gross_ns']:6.1f} ns   section {r['section_ns']:+6.1f} ns")
    if "dst_copy" in result:
        d = result["dst_copy"]
        print(f"nv_from_pod established: destination from the flow entry {d['copy_ns']} ns, endpoint lookup "
              f"{d['lookup_ns']} ns (ratio {d['ratio_copy_vs_lookup']}, floor {d['floor_ns']} ns)")
    t = result["tcp_single_stream"]
    print(f"iperf3 TCP 1 stream: datapath {t['bpf_gbps']} vs bare routing {t['plain_gbps']} Gbit/s, "
          f"ratio {t['ratio']}")
    r = result["ringbuf"]
    print(f"ring buffer: live {r['live']['consumed_per_s']} ev/s (submitted {r['live']['submitted']}, "
          f"lost {r['live']['lost']}, unaccounted {r['live']['unaccounted']}); backlog drain "
          f"{r['drain_events_per_s']} ev/s ({r['drained']}/{r['backlog_events']} events)")


if __name__ == "__main__":
    main()
