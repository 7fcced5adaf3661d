"""IPv6 vs IPv4 through the ebpf datapath on one node (needs root; ~1 min with the defaults).

  python -m bench.ipv6_datapath [--seconds 4] [--rounds 3] [--pp-rounds 3] [--dst-copy N] [--json]

A node netns with two dual-stack pods (tests/bpf/topo6.py: no IPv6 forwarding, no proxy NDP),
the ebpf datapath started in it, then in the same run:
1. iperf3 single-stream TCP pod a -> pod b, IPv4 and IPv6 alternated round by round (the first
   family of each round alternates too), so both see the same machine load; medians and the
   ratio IPv6/IPv4 (goal in the issue: >= 0.97).
2. nv_from_pod ns/packet (kernel.bpf_stats_enabled) under a 64-byte UDP blast a -> b of one
   established flow per family, with an empty program in front of nv_from_pod as this machine's
   floor (bench/bpf_datapath.py's measurement); the families alternated ``--pp-rounds`` times.
3. With ``--dst-copy N``: the same per family for the shipped program (a same-node destination
   delivered from the flow entry's copy) and the program built with -DNV_NO_DST_COPY (the
   endpoint lookup instead, as the IPv6 path was before ct6 entries carried the copy), the
   builds alternated N times on the same blasts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from novanet_ebpf_policy.backend import EbpfDatapath

from bench.bpf_datapath import per_packet
from novanet_core.backends import BackendContext
from novanet_core.bpf import bpffs
from novanet_core.bpf.netns import netns
from novanet_core.config.models import NovaNetConfig
from tests.bpf.topo6 import DualStackTopology

_BLAST = """
import socket, time
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
s.bind(("", 40000))
end = time.monotonic() + {secs}
while time.monotonic() < end:
    for _ in range(2000):
        s.sendto(b"x" * 64, ("{ip}", 9))
"""


def _dst(topo: DualStackTopology, family: int) -> str:
    b = topo.pods["b"]
    return b.ip6 if family == 6 else b.ip  # type: ignore[attr-defined]


def _tcp(topo: DualStackTopology, family: int, seconds: int) -> float:
    a, b = topo.pods["a"], topo.pods["b"]
    srv = b.popen("iperf3", "-s", "-1", "-p", "5321")
    try:
        deadline = time.monotonic() + 10
        while "5321" not in b.run("ss", "-ltnH", check=False).stdout:  # the server's socket, not a delay
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not listen")
            time.sleep(0.05)
        out = a.run("iperf3", f"-{family}", "-c", _dst(topo, family), "-p", "5321", "-t", str(seconds), "-A", "0,1",
                    "-J", check=False, timeout=seconds + 30).stdout
        return round(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
    finally:
        srv.kill()
        srv.wait()


def throughput(topo: DualStackTopology, seconds: int, rounds: int) -> dict[str, Any]:
    runs: dict[int, list[float]] = {4: [], 6: []}
    for r in range(rounds):
        for fam in ((4, 6) if r % 2 == 0 else (6, 4)):
            runs[fam].append(_tcp(topo, fam, seconds))
    med = {f: statistics.median(v) for f, v in runs.items()}
    return {"ipv4_gbps": runs[4], "ipv6_gbps": runs[6], "median_ipv4": med[4], "median_ipv6": med[6],
            "ratio_v6_v4": round(med[6] / med[4], 3) if med[4] else None}


def per_packet_family(dp: EbpfDatapath, topo: DualStackTopology, family: int, seconds: int) -> dict[str, Any]:
    """nv_from_pod's ns/packet and the floor's for one family's established flow."""
    def blast(t: DualStackTopology, secs: int) -> None:
        src = "AF_INET6" if family == 6 else "AF_INET"
        t.pods["a"].run("python3", "-c", _BLAST.format(family=src, secs=secs, ip=_dst(t, family)),
                        timeout=secs + 30)

    blast(topo, 1)  # the flow exists before the measured blast: its established packets are measured
    return per_packet(dp, topo, seconds, flood=blast)  # type: ignore[arg-type]


def per_packet_rounds(dp: EbpfDatapath, topo: DualStackTopology, seconds: int, rounds: int,
                      builds: dict[str, dict[str, str] | None]) -> dict[str, Any]:
    """nv_from_pod ns/packet per build and family, alternated: every round reloads each build and
    measures both families (the first family alternating), so both builds and families see the
    same load. Returns the runs, their medians, the floors and the IPv6-IPv4 gap per build."""
    runs: dict[str, dict[int, list[float]]] = {b: {4: [], 6: []} for b in builds}
    floors: list[float] = []
    try:
        for r in range(rounds):
            for b, defines in builds.items():
                if len(builds) > 1 or r == 0:
                    dp.reload(defines)
                for fam in ((4, 6) if r % 2 == 0 else (6, 4)):
                    pp = per_packet_family(dp, topo, fam, seconds)
                    runs[b][fam].append(pp["nv_from_pod"]["avg_ns"])
                    floors.append(pp["floor_empty_prog"]["avg_ns"])
    finally:
        if len(builds) > 1:
            dp.reload(None)
    out: dict[str, Any] = {"floor_ns": round(statistics.median(floors), 1), "floors": floors}
    for b, fams in runs.items():
        med = {f: round(statistics.median(v), 1) for f, v in fams.items()}
        out[b] = {"ipv4_runs": fams[4], "ipv6_runs": fams[6], "ipv4_ns": med[4], "ipv6_ns": med[6],
                  "ipv6_minus_ipv4_ns": round(med[6] - med[4], 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pp-rounds", type=int, default=3, help="alternations of the per-packet measurement")
    ap.add_argument("--dst-copy", type=int, default=0, metavar="N",
                    help="also the flow entry's destination copy against the endpoint lookup (N alternations)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/ipv6_datapath.py needs root (netns, BPF)")
    bpffs.ensure_mounted()
    topo = DualStackTopology().create(n_pods=2)
    result: dict[str, Any] = {"kernel": os.uname().release, "load_before": os.getloadavg()}
    try:
        with netns(topo.node):
            dp = EbpfDatapath(BackendContext(config=NovaNetConfig.model_validate(topo.config()),
                                             component="dataplane"))
            dp.start()
            try:
                dp.configure(topo.settings())
                for p in topo.pods.values():
                    dp.upsert_endpoint(p.endpoint(topo.gateway))
                result["tcp_single_stream"] = throughput(topo, args.seconds, args.rounds)
                result["per_packet_udp64"] = per_packet_rounds(dp, topo, args.seconds, args.pp_rounds,
                                                               {"shipped": None})
                if args.dst_copy:
                    result["dst_copy"] = per_packet_rounds(dp, topo, args.seconds, args.dst_copy,
                                                           {"copy": None, "lookup": {"NV_NO_DST_COPY": "1"}})
            finally:
                dp.stop()
    finally:
        topo.destroy()
    result["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    t = result["tcp_single_stream"]
    print(f"kernel {result['kernel']}, load {result['load_before'][0]:.1f} -> {result['load_after'][0]:.1f}")
    print(f"iperf3 TCP 1 stream pod -> pod, same node: IPv4 {t['ipv4_gbps']} IPv6 {t['ipv6_gbps']} Gbit/s; "
          f"medians {t['median_ipv4']} vs {t['median_ipv6']}, ratio IPv6/IPv4 {t['ratio_v6_v4']}")
    pp = result["per_packet_udp64"]
    print(f"nv_from_pod ns/packet (UDP 64 B, established): IPv4 {pp['shipped']['ipv4_runs']} IPv6 "
          f"{pp['shipped']['ipv6_runs']}; medians {pp['shipped']['ipv4_ns']} vs {pp['shipped']['ipv6_ns']} "
          f"(IPv6 {pp['shipped']['ipv6_minus_ipv4_ns']:+} ns); empty-program floor {pp['floor_ns']} ns")
    if "dst_copy" in result:
        d = result["dst_copy"]
        for b in ("copy", "lookup"):
            print(f"  {b:6s}: IPv4 {d[b]['ipv4_runs']} IPv6 {d[b]['ipv6_runs']}; medians {d[b]['ipv4_ns']} vs "
                  f"{d[b]['ipv6_ns']} (IPv6 {d[b]['ipv6_minus_ipv4_ns']:+} ns); floor {d['floor_ns']} ns")


if __name__ == "__main__":
    main()
