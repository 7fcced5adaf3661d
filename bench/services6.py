"""Benchmark of IPv6 Service load-balancing against IPv4, same run (needs root; ~2 min).

  python -m bench.services6 [--seconds 4] [--rounds 3] [--json]

One node netns with dual-stack pods a (client) and b (server) (tests/bpf/topo6.py), the ebpf
datapath, one ClusterIP frontend per family for each measured port, backend pod b. Interleaved
round by round, the client in the node's cgroup (socket-level translation, the only IPv6 path):

* ``direct4`` / ``direct6``: straight to b's IPv4 / IPv6 address (each family's baseline);
* ``svc4`` / ``svc6``: through the IPv4 / IPv6 ClusterIP (connect4 / connect6 translation).

Measured: iperf3 single-stream TCP throughput (``-A 0,1``) and the TCP connect rate (a client
opening and resetting connections for ``--seconds`` against a server that accepts and closes).
Reported: each mode's mean, ``svcN`` against ``directN`` of its family, and ``direct6`` against
``direct4``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import save
from bench.services import CONNECT_PORT, IPERF_PORT, connect_rate, frontend, iperf, loadavg
from novanet_core.bpf import bpffs
from tests.bpf.conftest import started_datapath
from tests.bpf.topo6 import DualStackTopology

VIP4, VIP6 = "10.96.0.10", "fd00:96::10"

# dual-stack listener: accepts and closes (the client resets: no TIME_WAIT on either side)
_ACCEPTOR = f"""
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(("::", {CONNECT_PORT})); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

MODES = ("direct4", "svc4", "direct6", "svc6")


class _Topo(DualStackTopology):
    prefix = "s6bh"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/services6.py needs root (netns, BPF)")
    bpffs.ensure_mounted()
    topo = _Topo().create(n_pods=2)
    result: dict[str, Any] = {
        "kernel": os.uname().release,
        "load_before": loadavg(),
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    servers: list[subprocess.Popen[str]] = []
    try:
        b = topo.pods["b"]
        servers.append(b.popen("iperf3", "-s", "-p", str(IPERF_PORT)))
        acc = b.popen("python3", "-c", _ACCEPTOR)
        servers.append(acc)
        assert acc.stdout is not None and acc.stdout.readline().strip() == "ready"
        with started_datapath(topo) as dp:
            for vip, bip, fam in ((VIP4, b.ip, ""), (VIP6, b.ip6, "/IPv6")):  # type: ignore[attr-defined]
                for port, name in ((IPERF_PORT, "iperf"), (CONNECT_PORT, "conn")):
                    dp.upsert_service(frontend(vip, port, bip, port, f"bench/m:{name}/TCP{fam}"))
            time.sleep(0.5)
            target = {"direct4": b.ip, "svc4": VIP4, "direct6": b.ip6, "svc6": VIP6}  # type: ignore[attr-defined]
            runs: dict[str, dict[str, list[float]]] = {m: {"gbps": [], "cps": []} for m in MODES}
            for r in range(args.rounds):
                for m in MODES if r % 2 == 0 else MODES[::-1]:  # alternate the order: drift cancels
                    runs[m]["gbps"].append(
                        round(iperf(topo, target[m], IPERF_PORT, args.seconds, topo.cgroup), 2)
                    )
                    runs[m]["cps"].append(
                        round(connect_rate(topo, target[m], CONNECT_PORT, args.seconds, topo.cgroup))
                    )
            stats = dp.service_status()["translations"]
        mean = {m: {k: statistics.fmean(v) for k, v in r.items()} for m, r in runs.items()}
        result.update(
            runs=runs,
            mean=mean,
            translations=stats,
            load_after=loadavg(),
            ratios={
                "svc4/direct4": {k: round(mean["svc4"][k] / mean["direct4"][k], 3) for k in ("gbps", "cps")},
                "svc6/direct6": {k: round(mean["svc6"][k] / mean["direct6"][k], 3) for k in ("gbps", "cps")},
                "direct6/direct4": {
                    k: round(mean["direct6"][k] / mean["direct4"][k], 3) for k in ("gbps", "cps")
                },
                "svc6/svc4": {k: round(mean["svc6"][k] / mean["svc4"][k], 3) for k in ("gbps", "cps")},
            },
        )
    finally:
        for s in servers:
            s.kill()
            s.wait()
        topo.destroy()
    save("services6", result)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"kernel {result['kernel']}, load {result['load_before']} -> {result['load_after']}")
    for m in MODES:
        print(
            f"{m:8s} {mean[m]['gbps']:6.2f} Gbit/s  {mean[m]['cps']:8.0f} connects/s   "
            f"rounds {runs[m]['gbps']} {runs[m]['cps']}"
        )
    for k, v in result["ratios"].items():
        print(f"{k:16s} throughput {v['gbps']:.3f}x  connect rate {v['cps']:.3f}x")


if __name__ == "__main__":
    main()
