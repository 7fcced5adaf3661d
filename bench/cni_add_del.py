"""CNI ADD and DEL latency: NovaNet vs the reference ``bridge`` + ``host-local`` plugins, same run.

Both plugins are exec'd the same way a runtime does it (``nsenter`` into the node namespace, env +
config on stdin), one pod namespace per ADD, rounds interleaved so that machine noise hits both
alike. NovaNet's binary is the static C ``novanet-cni`` that ``novanet install-cni`` installs;
``--with-python`` also measures the Python reference client (the venv's console script) in the
same run.

    .venv/bin/python -m bench.cni_add_del [--pods 40] [--rounds 3] [--datapath kernel|ebpf]
        [--attach-mode auto|tcx|tc] [--pool 8] [--concurrency 1] [--interval-ms 0] [--rcu-expedited]
        [--with-python]

``--pool`` is ``warmPool.size`` (each NovaNet round starts with a full pool, as a node does after a
quiet spell); ``--concurrency 20`` runs 20 ADDs at once (and gives pods/s); ``--interval-ms`` paces
sequential ADDs, so that the pool can refill between them.

``--rcu-expedited`` runs with ``/sys/kernel/rcu_expedited`` set to 1 (restored afterwards). That is a
node-wide kernel setting, not something NovaNet sets: the flag exists to show how much of a tcx
attach is the RCU grace period the kernel waits for on every tcx link create.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

from bench.common import save, summary
from novanet_core.cni.install import install
from tests.support.node import BIN, NodeUnderTest, sh


def exec_plugin(binary: str, node_ns: str, env: dict[str, str], conf: dict) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(["nsenter", f"--net=/run/netns/{node_ns}", binary], input=json.dumps(conf),
                       capture_output=True, text=True, env=env)
    return (time.perf_counter() - t) * 1000, p.returncode, p.stdout


def run_round(binary: str, node_ns: str, conf: dict, pods: int, tag: str, concurrency: int = 1,
              interval_ms: float = 0.0) -> tuple[list[float], list[float], float]:
    """ADD ``pods`` pods (``concurrency`` at a time, ``interval_ms`` apart when sequential), then DEL
    them; (ADD ms, DEL ms, ADD wall seconds)."""
    netns = []
    run = uuid.uuid4().hex[:6]  # another engineer's run of this bench uses the same tags
    for i in range(pods):
        name = f"nvb{run}-{tag}-{i}"
        sh("ip", "netns", "add", name)
        netns.append(name)
    adds: list[float] = []
    dels: list[float] = []
    added: list[tuple[str, str, dict]] = []
    lock = threading.Lock()

    def add(i: int) -> None:
        ns = netns[i]
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"{i:03d}{tag}{uuid.uuid4().hex[:10]}",
               "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
        ms, rc, out = exec_plugin(binary, node_ns, env, conf)
        if rc != 0:
            raise RuntimeError(f"ADD failed: {out}")
        with lock:
            adds.append(ms)
            added.append((ns, env["CNI_CONTAINERID"], json.loads(out)))

    try:
        t0 = time.perf_counter()
        if concurrency <= 1:
            for i in range(pods):
                add(i)
                if interval_ms:
                    time.sleep(interval_ms / 1000)
        else:
            with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
                for f in [ex.submit(add, i) for i in range(pods)]:
                    f.result()
        wall = time.perf_counter() - t0
        for ns, cid, res in added:
            env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "DEL", "CNI_CONTAINERID": cid,
                   "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
            ms, rc, out = exec_plugin(binary, node_ns, env, {**conf, "prevResult": res})
            if rc != 0:
                raise RuntimeError(f"DEL failed: {out}")
            dels.append(ms)
    finally:
        for name in netns:
            sh("ip", "netns", "del", name, check=False)
    return adds, dels, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--datapath", default="ebpf")
    ap.add_argument("--attach-mode", default="auto", choices=["auto", "tcx", "tc"],
                    help="bpf.attachMode for the eBPF datapath (tcx link creation dominates ADD on this VM)")
    ap.add_argument("--with-python", action="store_true", help="also measure the Python reference client")
    ap.add_argument("--pool", type=int, default=8, help="warmPool.size (0: every ADD builds its own veth pair)")
    ap.add_argument("--concurrency", type=int, default=1, help="ADDs in flight at once (the runtime starting pods in parallel)")
    ap.add_argument("--interval-ms", type=float, default=0.0, help="pause between sequential ADDs (pods arriving paced)")
    ap.add_argument("--rcu-expedited", action="store_true",
                    help="run with /sys/kernel/rcu_expedited=1 (node-wide; restored afterwards)")
    a = ap.parse_args()
    with _rcu_expedited(a.rcu_expedited):
        _run(a)


def _wait_pool(node: NodeUnderTest, size: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while node.call("status").get("warmPool", {}).get("ready", 0) < size:
        if time.monotonic() > deadline:
            raise TimeoutError("warm pool did not refill")
        time.sleep(0.05)


@contextlib.contextmanager
def _rcu_expedited(on: bool) -> Iterator[None]:
    knob = "/sys/kernel/rcu_expedited"
    if not on:
        yield
        return
    with open(knob) as f:
        before = f.read().strip()
    with open(knob, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(knob, "w") as f:
            f.write(before)


def _run(a: argparse.Namespace) -> None:
    extra: dict = {"warmPool": {"size": a.pool}}
    if a.datapath == "ebpf":
        extra["bpf"] = {"attachMode": a.attach_mode}
    node = NodeUnderTest(datapath=a.datapath, pod_cidr="10.42.8.0/24", extra=extra)
    ref_ns = f"nvb-ref{uuid.uuid4().hex[:4]}"
    sh("ip", "netns", "add", ref_ns)
    tmp = tempfile.mkdtemp(prefix="novanet-bench-")
    try:
        node.start(180)  # a loaded machine: the daemons start slowly
        install(os.path.join(tmp, "bin"), None)
        nova_bin = os.path.join(tmp, "bin", "novanet-cni")
        nova_conf = {"cniVersion": "1.0.0", "name": "novanet", "type": "novanet-cni",
                     "agentSocket": node.config["sockets"]["cni"]}
        ref_conf = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "nvbref0", "isGateway": True,
                    "ipMasq": False, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.43.8.0/24"}]],
                                               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(tmp, "ref-ipam")}}
        clients = [("novanet", nova_bin, node.ns, nova_conf), ("reference", "/usr/lib/cni/bridge", ref_ns, ref_conf)]
        if a.with_python:
            clients.append(("novanet-python", str(BIN / "novanet-cni"), node.ns, nova_conf))
        res: dict[str, dict[str, list[float]]] = {who: {"add": [], "del": [], "wall": []} for who, *_ in clients}
        for r in range(a.rounds):
            for who, binary, ns, conf in clients[:: 1 if r % 2 == 0 else -1]:
                if who.startswith("novanet") and a.pool:
                    _wait_pool(node, a.pool)  # every round starts as a node does after a quiet spell
                adds, dels, wall = run_round(binary, ns, conf, a.pods, f"{who[0]}{who[-1]}{r}", a.concurrency,
                                             a.interval_ms)
                res[who]["add"] += adds
                res[who]["del"] += dels
                res[who]["wall"].append(wall)
        pods_per_s = {who: round(a.pods * len(d["wall"]) / sum(d["wall"]), 1) for who, d in res.items()}
        for d in res.values():
            d.pop("wall")
        out = {k: {op: summary(v) for op, v in d.items()} for k, d in res.items()}
        ratios = {f"{op}_{p}": out["novanet"][op][p] / out["reference"][op][p] for op in ("add", "del") for p in ("p50", "p99")}
        steps = node.call("cni.timings")
        tag = ("_rcu_expedited" if a.rcu_expedited else "") + f"_pool{a.pool}_c{a.concurrency}" + \
            (f"_i{a.interval_ms:g}" if a.interval_ms else "")
        path = save(f"cni_add_del_{a.datapath}_{a.attach_mode}{tag}", {"pods_per_round": a.pods, "rounds": a.rounds,
                                    "datapath": a.datapath, "attach_mode": a.attach_mode,
                                    "rcu_expedited": a.rcu_expedited, "warm_pool": a.pool,
                                    "concurrency": a.concurrency, "interval_ms": a.interval_ms,
                                    "pods_per_second": pods_per_s, "load": os.getloadavg(),
                                    "results_ms": out, "ratios_novanet_over_reference": ratios,
                                    "agent_add_step_medians_ms": steps})
        print("| op | client | p50 | p99 | ratio p50 vs bridge+host-local | ratio p99 |")
        print("|---|---|---|---|---|---|")
        for op in ("add", "del"):
            r_ = out["reference"][op]
            for who in res:
                n = out[who][op]
                print(f"| {op.upper()} | {who} | {n['p50']:.1f} ms | {n['p99']:.1f} ms | "
                      f"{n['p50'] / r_['p50']:.2f} | {n['p99'] / r_['p99']:.2f} |")
        print(f"ADD throughput (pods/s, {a.pods} pods per round, {a.concurrency} at a time): {pods_per_s}")
        print(f"agent-side ADD step medians (ms): {steps}; warm pool "
              f"{ {k: v for k, v in node.call('status').get('warmPool', {}).items() if k != 'members'} }")
        print(f"results: {path}")
    finally:
        node.close()
        sh("ip", "netns", "del", ref_ns, check=False)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
