"""What a pod's two tcx links cost, and two ways around it that do not work (needs root; ~5 s).

  python -m bench.tcx_link_cost [--veths 10]

For fresh veths (in a throwaway netns), each with an empty SCHED_CLS program:
1. attach ingress + egress one after the other, vs from two threads at once;
2. on teardown, detach both links then delete the veth, vs delete the veth with the links still
   attached (the kernel detaches them).
Figures are medians in ms per veth. This explains the CNI ADD/DEL figures of the tcx attach mode
(docs/benchmarks.md, "CNI ADD and DEL latency").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import save
from novanet_core.bpf import ktree, syscall
from novanet_core.netns import in_netns

EMPTY = b"int nv_bench_empty(struct __sk_buff *skb) { return -1; }"


def _ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 1)


def measure(prog_fd: int, veths: int) -> dict[str, Any]:
    from pyroute2 import IPRoute

    seq, par, detach_first, delete_first = [], [], [], []
    with IPRoute() as ipr:
        def veth(i: int) -> int:
            ipr.link("add", ifname=f"nvb{i}a", kind="veth", peer=f"nvb{i}b")
            idx = ipr.link_lookup(ifname=f"nvb{i}a")[0]
            ipr.link("set", index=idx, state="up")
            return idx

        for i in range(veths):
            # sequential attach, then detach-first teardown
            idx = veth(i)
            t = time.perf_counter()
            links = [syscall.tcx_attach(prog_fd, idx, ingress=True), syscall.tcx_attach(prog_fd, idx, ingress=False)]
            seq.append(time.perf_counter() - t)
            t = time.perf_counter()
            for lfd in links:
                syscall.link_detach(lfd)
            ipr.link("del", index=idx)
            detach_first.append(time.perf_counter() - t)
            for lfd in links:
                os.close(lfd)

            # parallel attach, then delete-first teardown
            idx = veth(i)
            got: dict[bool, int] = {}

            def attach(ingress: bool, idx: int = idx, got: dict[bool, int] = got) -> None:
                got[ingress] = syscall.tcx_attach(prog_fd, idx, ingress=ingress)

            t = time.perf_counter()
            th = threading.Thread(target=attach, args=(False,))
            th.start()
            attach(True)
            th.join()
            par.append(time.perf_counter() - t)
            t = time.perf_counter()
            ipr.link("del", index=idx)
            for lfd in got.values():
                os.close(lfd)
            delete_first.append(time.perf_counter() - t)
    return {"veths": veths,
            "attach_pair_ms": {"sequential": _ms(seq), "two_threads": _ms(par)},
            "teardown_ms": {"detach_then_delete": _ms(detach_first), "delete_with_links": _ms(delete_first)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--veths", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/tcx_link_cost.py needs root (netns, BPF)")
    ktree.activate("/var/lib/novanet/ktree")
    from bcc import BPF

    b = BPF(text=EMPTY)
    fd = b.load_func(b"nv_bench_empty", BPF.SCHED_CLS).fd
    ns = f"nvbench-tcx-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with in_netns(ns):
            res = measure(fd, args.veths)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)  # takes any veth left with it
        b.cleanup()
    save("tcx_link_cost", res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
