"""Single-stream TCP over IPv6 vs IPv4 through NovaNet's eBPF datapath, same node and across nodes
(VXLAN and Geneve over an IPv4 underlay, VXLAN over an IPv6 one), against IPv6 peers with no
BPF, all in one run (needs root; ~10 min with the defaults).

  python -m bench.ipv6_throughput [--rounds 7] [--seconds 3] [--plot docs/img/ipv6_throughput.png]

Set up at once (bench/ipv6_peers.py says what each peer is):
* ``novanet-vxlan``: two NovaNet nodes (tests/overlay/dual_stack_nodes.py: agent, dataplane,
  datapath ebpf, tunnelProtocol vxlan), pods a1 and a2 on node a, b1 on node b; same-node is
  a1 -> a2, cross-node a1 -> b1, each over IPv4 and over IPv6.
* ``novanet-geneve``: the same with geneve, a1 -> b1 only (same-node traffic never meets the
  tunnel).
* ``nv-vxlan6u``: VXLAN over an IPv6-only underlay (outer IPv6, the header flannel's own IPv6
  form has), a1 -> b1 over IPv6.
* the peers: ``veth-routed`` (same node, IPv6 and IPv4), ``routed``, ``flannel`` (across nodes,
  IPv6) and ``flannel-v4u`` (across nodes, IPv6 and IPv4). Their IPv4 cells are controls: the
  kernel's own IPv6/IPv4 ratio on the same path with no BPF (routed veths same node; VXLAN over
  an IPv4 underlay with the MTU of NovaNet's, 1450), printed next to NovaNet's, so that what IPv6
  costs the kernel itself (a 20-byte longer header, a smaller MSS, its own code) is told apart
  from what NovaNet adds.

Every round runs each cell once (iperf3 -c, one stream, client on CPU 0 and server on CPU 1,
the first second omitted as TCP's ramp), in an order rotated by one cell per round and reversed
every other round, so that all see the same machine load and none always goes first. Reported per
cell: the rounds, median, min/max; per ratio: the ratio of the medians and the median (and range)
of the per-round ratios (both sides from the same round: the load they saw was alike).
Goals (issue 14): IPv6/IPv4 through NovaNet >= 0.97, NovaNet IPv6 / the IPv6 peer >= 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import save
from bench.ipv6_peers import CrossNode6, VethRouted6
from tests.overlay.dual_stack_nodes import TwoNodes

PORT = 5201


@dataclass
class Cell:
    name: str
    client: str  # netns paths
    server: str
    dst: str


def iperf(cell: Cell, seconds: int) -> float:
    argv = [
        "nsenter",
        f"--net={cell.client}",
        "iperf3",
        "-c",
        cell.dst,
        "-p",
        str(PORT),
        "-t",
        str(seconds),
        "-O",
        "1",
        "-A",
        "0,1",
        "-J",
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    try:
        return round(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
    except (ValueError, KeyError):
        raise RuntimeError(
            f"{cell.name}: iperf3 to {cell.dst} failed: {r.stdout[-400:]} {r.stderr[-400:]}"
        ) from None


def _listening(netns: str) -> bool:
    out = subprocess.run(["nsenter", f"--net={netns}", "ss", "-ltnH"], capture_output=True, text=True).stdout
    return f":{PORT} " in out


def order(cells: list[str], r: int) -> list[str]:
    k = r % len(cells)
    o = cells[k:] + cells[:k]
    return o if r % 2 == 0 else o[::-1]


# name of a ratio -> (numerator cell, denominator cell, goal)
RATIOS = {
    "same-node IPv6/IPv4 (NovaNet)": ("nv-same-v6", "nv-same-v4", 0.97),
    "same-node NovaNet IPv6 / veth-routed IPv6": ("nv-same-v6", "veth-routed-v6", 1.0),
    "vxlan IPv6/IPv4 (NovaNet)": ("nv-vxlan-v6", "nv-vxlan-v4", 0.97),
    "vxlan NovaNet IPv6 / flannel-v4u IPv6": ("nv-vxlan-v6", "flannel-v4u-v6", 1.0),
    "vxlan NovaNet IPv6 / flannel IPv6": ("nv-vxlan-v6", "flannel-v6", 1.0),
    "vxlan over IPv6 underlay, NovaNet IPv6 / flannel IPv6": ("nv-vxlan6u-v6", "flannel-v6", 1.0),
    "geneve IPv6/IPv4 (NovaNet)": ("nv-geneve-v6", "nv-geneve-v4", 0.97),
    "geneve NovaNet IPv6 / flannel-v4u IPv6": ("nv-geneve-v6", "flannel-v4u-v6", 1.0),
    "geneve NovaNet IPv6 / flannel IPv6": ("nv-geneve-v6", "flannel-v6", 1.0),
    "vxlan NovaNet IPv6 / routed IPv6 (no encapsulation)": ("nv-vxlan-v6", "routed-v6", None),
    # the controls: the kernel's own ratio on the same path, no BPF
    "kernel same-node IPv6/IPv4 (veth-routed)": ("veth-routed-v6", "veth-routed-v4", None),
    "kernel vxlan IPv6/IPv4 (flannel-v4u, IPv4 underlay)": ("flannel-v4u-v6", "flannel-v4u-v4", None),
    "same-node NovaNet IPv4 / veth-routed IPv4": ("nv-same-v4", "veth-routed-v4", None),
    "vxlan NovaNet IPv4 / flannel-v4u IPv4": ("nv-vxlan-v4", "flannel-v4u-v4", None),
}


def summarize(runs: dict[str, list[float]]) -> dict[str, Any]:
    cells = {
        c: {"gbps": v, "median": statistics.median(v), "min": min(v), "max": max(v)} for c, v in runs.items()
    }
    ratios = {}
    for name, (num, den, goal) in RATIOS.items():
        per_round = [round(a / b, 3) for a, b in zip(runs[num], runs[den], strict=True) if b]
        ratios[name] = {
            "of_medians": round(cells[num]["median"] / cells[den]["median"], 3),
            "per_round_median": statistics.median(per_round),
            "per_round_min": min(per_round),
            "per_round_max": max(per_round),
            "goal": goal,
        }
    return {"cells": cells, "ratios": ratios}


def plot(runs: dict[str, list[float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.boxplot([runs[n] for n in names], whis=(0, 100))
    for i, n in enumerate(names, start=1):
        ax.plot([i] * len(runs[n]), runs[n], "o", alpha=0.5, color="tab:blue", markersize=4)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    ax.set_ylabel("Gbit/s (iperf3, 1 TCP stream)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--plot", default="", help="write a PNG of every cell's rounds there")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/ipv6_throughput.py needs root (netns, BPF)")
    tag = f"b6{os.getpid() % 10000}"
    vx = TwoNodes("vxlan", prefix=f"{tag}x", placement={"a1": "a", "a2": "a", "b1": "b"})
    gn = TwoNodes("geneve", prefix=f"{tag}g", placement={"a1": "a", "b1": "b"})
    # VXLAN over an IPv6-only underlay: the outer header flannel's own IPv6 form has
    v6u = TwoNodes("vxlan", prefix=f"{tag}6", placement={"a1": "a", "b1": "b"}, family=6)
    peers: dict[str, Any] = {}
    servers: list[subprocess.Popen[bytes]] = []
    runs: dict[str, list[float]] = {}
    load = [os.getloadavg()[0]]
    t0 = time.monotonic()
    try:
        for t in (vx, gn, v6u):
            t.up()
        mtu = int(
            json.loads(vx.in_pod("a1", "ip", "-j", "link", "show", "eth0", check=True).stdout)[0]["mtu"]
        )
        peers["veth-routed"] = VethRouted6(f"{tag}v", mtu)  # the same pod MTU as NovaNet's pods
        for mode in ("routed", "flannel", "flannel-v4u"):
            peers[mode] = CrossNode6(f"{tag}{mode[0]}{len(mode)}", mode)
        for p in peers.values():
            p.up()
        cells = [
            Cell("nv-same-v4", vx.pods["a1"].netns, vx.pods["a2"].netns, vx.pods["a2"].ip4),
            Cell("nv-same-v6", vx.pods["a1"].netns, vx.pods["a2"].netns, vx.pods["a2"].ip6),
            *(
                Cell(
                    f"veth-routed-v{f}", peers["veth-routed"].netns("a"), peers["veth-routed"].netns("b"), ip
                )
                for f, ip in ((6, peers["veth-routed"].ip6["b"]), (4, peers["veth-routed"].ip4["b"]))
            ),
            Cell("nv-vxlan-v4", vx.pods["a1"].netns, vx.pods["b1"].netns, vx.pods["b1"].ip4),
            Cell("nv-vxlan-v6", vx.pods["a1"].netns, vx.pods["b1"].netns, vx.pods["b1"].ip6),
            Cell("nv-vxlan6u-v6", v6u.pods["a1"].netns, v6u.pods["b1"].netns, v6u.pods["b1"].ip6),
            Cell("nv-geneve-v4", gn.pods["a1"].netns, gn.pods["b1"].netns, gn.pods["b1"].ip4),
            Cell("nv-geneve-v6", gn.pods["a1"].netns, gn.pods["b1"].netns, gn.pods["b1"].ip6),
            *(
                Cell(f"{m}-v6", peers[m].netns("a"), peers[m].netns("b"), peers[m].ip6["b"])
                for m in ("flannel-v4u", "flannel", "routed")
            ),
            Cell(
                "flannel-v4u-v4",
                peers["flannel-v4u"].netns("a"),
                peers["flannel-v4u"].netns("b"),
                peers["flannel-v4u"].ip4["b"],
            ),
        ]
        by_name = {c.name: c for c in cells}
        for srv in sorted({c.server for c in cells}):  # iperf3 -s listens on both families
            servers.append(
                subprocess.Popen(
                    ["nsenter", f"--net={srv}", "iperf3", "-s", "-p", str(PORT)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 20
        while not all(_listening(s) for s in {c.server for c in cells}):  # the servers' sockets, not a delay
            if time.monotonic() > deadline:
                raise RuntimeError("an iperf3 server did not listen")
            time.sleep(0.1)
        for c in cells:  # neighbours, first flows: each path carries a packet before it is timed
            fam = "-6" if ":" in c.dst else "-4"
            subprocess.run(
                ["nsenter", f"--net={c.client}", "ping", fam, "-c", "2", "-i", "0.2", "-W", "2", c.dst],
                capture_output=True,
            )
        print(f"set up in {time.monotonic() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        names = [c.name for c in cells]
        runs = {n: [] for n in names}
        for r in range(a.rounds):
            for n in order(names, r):
                runs[n].append(iperf(by_name[n], a.seconds))
            load.append(os.getloadavg()[0])
            print(
                f"round {r + 1}: "
                + ", ".join(f"{n} {runs[n][-1]:.2f}" for n in names)
                + f" (load {load[-1]:.1f})",
                file=sys.stderr,
            )
    finally:
        for s in servers:
            s.kill()
            s.wait()
        for p in peers.values():
            p.down()
        for t in (vx, gn, v6u):
            t.down()
    out = {
        "rounds": a.rounds,
        "seconds": a.seconds,
        "load_1min": load,
        "cpus": os.cpu_count(),
        **summarize(runs),
    }
    path = save("ipv6_throughput", out)
    if a.plot:
        plot(
            runs,
            a.plot,
            f"single-stream TCP, {a.rounds} rounds x {a.seconds} s interleaved, load "
            f"{min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs",
        )
    for n, c in out["cells"].items():
        print(
            f"{n:16s} median {c['median']:6.2f} Gbit/s  min {c['min']:.2f} max {c['max']:.2f}  rounds {c['gbps']}"
        )
    for n, r in out["ratios"].items():
        goal = f"  goal >= {r['goal']}" if r["goal"] else ""
        print(
            f"{n:52s} {r['of_medians']:.3f} (per round: median {r['per_round_median']:.3f}, "
            f"{r['per_round_min']:.3f}-{r['per_round_max']:.3f}){goal}"
        )
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
