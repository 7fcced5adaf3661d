"""NetworkPolicy benchmark (needs root; ~60 s per part; run the parts separately on 2 vCPUs).

  python -m bench.policy_throughput throughput [--seconds 3] [--rounds 2]
  python -m bench.policy_throughput compile
  python -m bench.policy_throughput lab [--changes 40]

throughput: same-node single-stream TCP (iperf3 a->b) with 0, 1,000 and 10,000 compiled rules in
  the eBPF datapath (half on b's ingress, half on a's egress, so both lookups run, plus the one
  rule that admits a->b), as a ratio to 0 rules; side by side with the same numbers of iptables
  rules in FORWARD on plain kernel routing (machine-feasibility.md section 8 style:
  ``-s 192.0.2.X/32 -p tcp --dport N -j DROP``, none match, evaluated linearly per packet).
  Runs are interleaved (0, 1k, 10k, 0, ...) so drift hits every configuration alike. Also: time to
  program the rules into the maps, full and one incremental change.
compile: full compile of 1,000 policies over 5,000 pods and the incremental one-pod-relabel delta
  (tests/unit/policy/bench_policy.py's cluster).
lab: policy programming latency in a lab (examples/lab-netpol.yaml shape): ``novanet lab apply``
  of policy creations/updates and pod/namespace label changes; latency = agent takes the state
  event in -> dataplane acknowledged the maps (``policy.status``), plus the end-to-end time from the
  manifest write to that acknowledgement.
Goals (issue): ratio >= 0.97 at 10,000 rules; full compile <= 1 s; incremental <= 20 ms;
programming p99 <= 200 ms.
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

from bench.common import pct, save

RULE_COUNTS = (0, 1000, 10000)


# ---------------------------------------------------------------------- throughput
def _wire(ip: str, pod: str, ident: int, direction: str, n: int, allow_peer: int) -> dict[str, Any]:
    """An endpoint with ``n`` rules on one direction: n-1 that never match a->b, and the one that does."""
    rules = [{"peer": {"identities": [100000 + i]}, "ports": [{"protocol": "TCP", "first": 1000 + i % 60000,
                                                               "last": 1000 + i % 60000}],
              "policy": f"bench/p{i // 10}", "origin": f"{direction}[{i % 10}]"} for i in range(max(0, n - 1))]
    rules.append({"peer": {"identities": [allow_peer]}, "ports": [{"protocol": "TCP", "first": 5301, "last": 5301}],
                  "policy": "bench/allow", "origin": f"{direction}[0]"})
    other = "egress" if direction == "ingress" else "ingress"
    return {"ip": ip, "pod": pod, "identity": ident, direction: {"isolated": n > 0, "rules": rules if n else [],
                                                                 "selected_by": ["bench/allow"]},
            other: {"isolated": False, "rules": []}}


def _apply(dp: Any, endpoints: list[dict[str, Any]], full: bool) -> dict[str, Any]:
    """What the dataplane does with ``dp.policy.apply``: decode the wire form, then the backend."""
    from novanet_core.policy.wire import decode_update

    u = decode_update({"endpoints": endpoints, "full": full})
    return dp.apply_policy(u.upserts, u.deletes, u.full)


def _program(dp: Any, topo: Any, n: int) -> dict[str, Any]:
    a, b = topo.pods["a"], topo.pods["b"]
    half = n // 2
    t0 = time.perf_counter()
    st = _apply(dp, [_wire(b.ip, "bench/b", b.identity, "ingress", n - half, a.identity),
                     _wire(a.ip, "bench/a", a.identity, "egress", half, b.identity)], True)
    return {"seconds": round(time.perf_counter() - t0, 3), "entries": st["rules"]}


def _iptables(topo: Any, n: int) -> None:
    from tests.bpf.topo import sh

    lines = ["*filter", ":FORWARD ACCEPT [0:0]"]
    lines += [f"-A FORWARD -s 192.0.{2 + i // 250 % 50}.{i % 250 + 1}/32 -p tcp --dport {1000 + i % 60000} -j DROP"
              for i in range(n)]
    lines.append("COMMIT")
    subprocess.run(["ip", "netns", "exec", topo.node, "iptables-restore"], input="\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True)
    got = sh("ip", "netns", "exec", topo.node, "iptables", "-S", "FORWARD").stdout.count("-j DROP")
    assert got == n, f"iptables FORWARD holds {got} rules, wanted {n}"


def throughput(seconds: int, rounds: int) -> dict[str, Any]:
    from novanet_ebpf_policy.backend import EbpfDatapath

    from bench.bpf_datapath import _iperf_tcp
    from novanet_core.backends import BackendContext
    from novanet_core.bpf import bpffs
    from novanet_core.bpf.netns import netns
    from novanet_core.config.models import NovaNetConfig
    from tests.bpf.topo import Topology, sh

    bpffs.ensure_mounted()
    topo = Topology().create(n_pods=2)
    ebpf: dict[int, list[float]] = {n: [] for n in RULE_COUNTS}
    ipt: dict[int, list[float]] = {n: [] for n in RULE_COUNTS}
    programming: dict[int, Any] = {}
    try:
        cfg = NovaNetConfig.model_validate(topo.config())
        with netns(topo.node):
            dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
            dp.start()
            try:
                dp.configure(topo.settings())
                for p in topo.pods.values():
                    dp.upsert_endpoint(p.endpoint(topo.gateway))
                for _ in range(rounds):
                    for n in RULE_COUNTS:
                        programming[n] = _program(dp, topo, n)
                        ebpf[n].append(_iperf_tcp(topo, seconds))
                # one incremental change on top of 10,000 rules: a new peer identity on b's ingress
                a, b = topo.pods["a"], topo.pods["b"]
                w = _wire(b.ip, "bench/b", b.identity, "ingress", RULE_COUNTS[-1] // 2 + 1, a.identity)
                _program(dp, topo, RULE_COUNTS[-1])
                t0 = time.perf_counter()
                inc = _apply(dp, [w], False)
                programming["incremental_one_rule"] = {"seconds": round(time.perf_counter() - t0, 4),
                                                      "written": inc["rules_added"] + inc["rules_removed"]}
                entries_10k = dp.list_policy()["rules"]
                programming["entries_at_10000"] = len(entries_10k)
                # plain kernel routing + iptables, same topology
                _apply(dp, [], True)
                for p in topo.pods.values():
                    dp.attacher.detach(p.host_if)
                    sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", f"net.ipv4.conf.{p.host_if}.proxy_arp=1")
                    sh("ip", "-n", topo.node, "route", "replace", f"{p.ip}/32", "dev", p.host_if)
                sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
                try:
                    for _ in range(rounds):
                        for n in RULE_COUNTS:
                            _iptables(topo, n)
                            ipt[n].append(_iperf_tcp(topo, seconds))
                finally:
                    _iptables(topo, 0)
                    sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.ipv4.ip_forward=0")
            finally:
                dp.stop()
    finally:
        topo.destroy()

    def table(d: dict[int, list[float]]) -> dict[str, Any]:
        base = statistics.fmean(d[0])
        return {str(n): {"gbps": [round(x, 2) for x in d[n]], "mean": round(statistics.fmean(d[n]), 2),
                         "ratio": round(statistics.fmean(d[n]) / base, 3)} for n in RULE_COUNTS}

    return {"seconds": seconds, "rounds": rounds, "ebpf": table(ebpf), "iptables": table(ipt),
            "programming": {str(k): v for k, v in programming.items()}}


# ---------------------------------------------------------------------- compile
def compile_figures() -> dict[str, Any]:
    from novanet_core.policy import PolicyEngine
    from tests.unit.policy.bench_policy import build

    st = build(5000, 1000)
    fulls = []
    eng = PolicyEngine()
    for _ in range(3):
        eng = PolicyEngine()
        t0 = time.perf_counter()
        eng.load(st)
        fulls.append(time.perf_counter() - t0)
    whole = _relabels(eng, st)
    # The agent compiles only its own node's endpoints (PolicyEngine(node=...)): the same changes
    # as one of the 20 nodes sees them.
    node_eng = PolicyEngine(node="node-1")
    node_eng.load(st)
    per_node = _relabels(node_eng, st)
    return {"pods": 5000, "policies": 1000, "full_seconds": [round(x, 3) for x in fulls],
            "full_median": round(statistics.median(fulls), 3),
            "incremental_ms": _summary(whole), "incremental_ms_one_node": _summary(per_node)}


def _relabels(eng: Any, st: Any) -> list[float]:
    """One label change on pod-1 of each of 20 namespaces (ns-0's pod is matched by the 200
    DNS-egress policies' namespaceSelector: the worst case); seconds per change."""
    from novanet_core.state.model import Pod

    incs = []
    for k in [k for k in sorted(st.pods) if k.endswith("/pod-1")][:20]:
        old = st.pods[k]
        labels = {**old.labels, "app": "app-0" if old.labels["app"] != "app-0" else "app-2"}
        t0 = time.perf_counter()
        eng.upsert_pod(Pod(old.namespace, old.name, labels, old.node, old.ip, old.host_ip, old.ports))
        incs.append(time.perf_counter() - t0)
    return incs


def _summary(incs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(incs) * 1000, 2), "p99": round(pct(incs, 99) * 1000, 2),
            "max": round(max(incs) * 1000, 2)}


# ---------------------------------------------------------------------- lab programming latency
def _cli(lab: str, *args: str, stdin: str | None = None) -> str:
    bindir = os.path.dirname(sys.executable)
    r = subprocess.run([os.path.join(bindir, "novanet"), *args], input=stdin, capture_output=True, text=True,
                       env={**os.environ, "NOVANET_LAB": lab}, timeout=300)
    if r.returncode:
        raise SystemExit(f"novanet {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def lab_latency(changes: int) -> dict[str, Any]:
    import yaml
    from novanet_lab.paths import LabPaths

    from novanet_core.api.client import ApiClient

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = yaml.safe_load(open(os.path.join(here, "examples", "lab-netpol.yaml")))
    name = f"pb{os.getpid() % 100000}"
    spec["name"] = name
    with tempfile.TemporaryDirectory() as tmp:
        sf = os.path.join(tmp, "spec.yaml")
        with open(sf, "w") as f:
            yaml.safe_dump(spec, f)
        _cli(name, "lab", "up", "--spec", sf, "-q", "-o", "json")
        try:
            sock = str(LabPaths(name).socket("node-1", "agent"))
            with ApiClient(sock) as c:
                before = len(c.call("policy.status")["recent"])
            e2e = []
            for i in range(changes):
                kind = i % 4
                if kind == 0:
                    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": f"p{i}", "namespace": "x"},
                           "spec": {"podSelector": {"matchLabels": {"pod": "abc"[i % 3]}},
                                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                                 "ports": [{"port": 80 + i % 2, "protocol": "TCP"}]}]}}
                elif kind == 1:
                    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": f"p{i - 1}", "namespace": "x"},
                           "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                                    "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/16",
                                                                    "except": [f"10.42.0.{i % 200}/32"]}}]}]}}
                elif kind == 2:
                    doc = {"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "y", "labels": {"ns": "y", "round": str(i)}}}
                else:
                    doc = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "b", "namespace": "z", "labels": {"pod": "b", "round": str(i)}},
                           "spec": {"nodeName": "node-1", "containers": [{"name": "server", "ports": [
                               {"containerPort": p, "protocol": pr, "name": f"serve-{p}-{pr.lower()}"}
                               for p in (80, 81) for pr in ("TCP", "UDP")]}]}}
                _cli(name, "lab", "apply", "-f", "-", stdin=yaml.safe_dump(doc))
                md = doc["metadata"]
                fname = "_".join([doc["kind"].lower(), *([md["namespace"]] if "namespace" in md else []), md["name"]])
                t_write = (LabPaths(name).manifest_dir / f"{fname}.yaml").stat().st_mtime  # when the "apiserver" had it
                with ApiClient(sock) as c:
                    st = c.call("policy.status")
                last = [r for r in st["recent"] if not r["full"]]
                if last and last[-1]["at"] >= t_write:
                    e2e.append(last[-1]["at"] - t_write)
            with ApiClient(sock) as c:
                st = c.call("policy.status")
            samples = [r["seconds"] for r in st["recent"][before:] if not r["full"]]
        finally:
            _cli(name, "lab", "down", "-q")
    return {"changes": changes, "programmed_events": len(samples),
            "agent_to_datapath_ms": {"p50": round(pct(samples, 50) * 1000, 2), "p99": round(pct(samples, 99) * 1000, 2),
                                     "max": round(max(samples) * 1000, 2)},
            "manifest_write_to_enforced_ms": {"n": len(e2e), "p50": round(pct(e2e, 50) * 1000, 1),
                                              "p99": round(pct(e2e, 99) * 1000, 1),
                                              "max": round(max(e2e) * 1000, 1) if e2e else None}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["throughput", "compile", "lab"])
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--changes", type=int, default=40)
    args = ap.parse_args()
    if args.part != "compile" and os.geteuid() != 0:
        sys.exit("bench/policy_throughput.py throughput|lab needs root (netns, BPF)")
    if args.part == "throughput":
        res = throughput(args.seconds, args.rounds)
    elif args.part == "compile":
        res = compile_figures()
    else:
        res = lab_latency(args.changes)
    print(json.dumps(res, indent=2))
    save(f"policy_{args.part}", res)


if __name__ == "__main__":
    main()
