"""Same-node single-stream TCP, IPv6 vs IPv4, between two dual-stack pods of one NovaNet node
(needs root; ~1 min with the defaults).

  python -m bench.dual_stack_throughput [--datapath kernel] [--seconds 5] [--rounds 3] [--json]

A real agent and dataplane in a throwaway node namespace (tests/support/node.py), two pods
added through the CNI with one address per family, then iperf3 pod a -> pod b alternating the
families round by round, so that both see the same machine load. Reported: Gbit/s per round and
family, medians, and the ratio IPv6/IPv4 (goal in the issue: >= 0.97). Only datapaths that serve
IPv6 can run it (the agent refuses the others at start).
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

from tests.support.node import NodeUnderTest

DUAL = {"clusterCIDR": "10.42.0.0/16,fd00:42::/48", "podCIDR": "10.42.7.0/24,fd00:42:0:7::/64"}


def _in(netns: str, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, **kw)


def _iperf(client: str, server: str, dst: str, seconds: int) -> float:
    srv = subprocess.Popen(["nsenter", f"--net={server}", "iperf3", "-s", "-1", "-p", "5311"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the server's socket, not a guessed delay
            if "5311" in _in(server, "ss", "-ltnH").stdout:
                break
            time.sleep(0.05)
        out = _in(client, "iperf3", "-c", dst, "-p", "5311", "-t", str(seconds), "-A", "0,1", "-J",
                  timeout=seconds + 30).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.kill()
        srv.wait()


def run(datapath: str, seconds: int, rounds: int) -> dict[str, Any]:
    node = NodeUnderTest(datapath=datapath, extra=DUAL)
    try:
        node.start()
        pods = []
        for i in range(2):
            netns = node.add_pod_netns()
            rc, res = node.cni("ADD", f"b{i}{node.id}bench", netns)
            if rc != 0:
                raise RuntimeError(f"ADD failed: {res} {node.last_stderr}")
            addrs = [a["address"].split("/")[0] for a in res["ips"]]
            pods.append((netns, next(a for a in addrs if "." in a), next(a for a in addrs if ":" in a)))
        (a_ns, _, _), (b_ns, b4, b6) = pods
        results: dict[str, list[float]] = {"ipv4": [], "ipv6": []}
        for r in range(rounds):
            order = [("ipv4", b4), ("ipv6", b6)] if r % 2 == 0 else [("ipv6", b6), ("ipv4", b4)]
            for fam, dst in order:
                results[fam].append(round(_iperf(a_ns, b_ns, dst, seconds), 2))
        med = {f: statistics.median(v) for f, v in results.items()}
        return {"datapath": datapath, "seconds": seconds, "rounds": results, "median_gbps": med,
                "ratio_ipv6_over_ipv4": round(med["ipv6"] / med["ipv4"], 3)}
    finally:
        node.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datapath", default="kernel")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = run(a.datapath, a.seconds, a.rounds)
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"datapath {out['datapath']}: same-node single-stream TCP, {a.rounds} rounds x {a.seconds} s")
    for fam, vals in out["rounds"].items():
        print(f"  {fam}: {' / '.join(f'{v:.2f}' for v in vals)} Gbit/s (median {out['median_gbps'][fam]:.2f})")
    print(f"  ratio IPv6/IPv4: {out['ratio_ipv6_over_ipv4']:.3f}")


if __name__ == "__main__":
    main()
