"""Compile-time measurement (a script, not a test: it prints figures, it asserts no timings).

    .venv/bin/python tests/unit/policy/bench_policy.py [--pods 5000] [--policies 1000] [--default-deny]

Cluster shape: 50 namespaces; per namespace, apps of 10 replicas each (replicas share labels, so
one identity per app) declaring named ports; policies mix default-deny, same-app, cross-namespace
(namespaceSelector), named ports, port ranges and ipBlock-with-except, in both directions.
"""

from __future__ import annotations

import argparse
import statistics
import time

from novanet_core.policy import PolicyEngine
from novanet_core.state.model import ClusterState, ContainerPort, Namespace, NetworkPolicy, Pod

PORTS = (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics"), ContainerPort(53, "UDP", "dns"))


def policy_spec(i: int, ns: str, apps: int) -> dict:
    app = f"app-{i % apps}"
    kind = i % 5
    if kind == 0:
        return {"podSelector": {}, "policyTypes": ["Ingress"]}
    if kind == 1:
        return {"podSelector": {"matchLabels": {"app": app}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app-{(i + 1) % apps}"}}}],
                             "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100}]}]}
    if kind == 2:
        return {"podSelector": {"matchLabels": {"app": app}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}},
                                       "podSelector": {"matchExpressions": [
                                           {"key": "role", "operator": "In", "values": ["scraper", "agent"]}]}}],
                             "ports": [{"port": "metrics"}]}]}
    if kind == 3:
        return {"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [app]}]},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-0"}}}],
                            "ports": [{"port": 53, "protocol": "UDP"}]},
                           {"to": [{"podSelector": {"matchLabels": {"app": app}}}]}]}
    return {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16", "10.1.2.0/27"]}}],
                        "ports": [{"protocol": "TCP", "port": 443}]},
                       {"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]}


def build(n_pods: int, n_policies: int, n_ns: int = 50, replicas: int = 10) -> ClusterState:
    st = ClusterState()
    for n in range(n_ns):
        st.namespaces[f"ns-{n}"] = Namespace(f"ns-{n}", {"team": "monitoring" if n % 10 == 0 else f"team-{n % 7}"})
    per_ns = n_pods // n_ns
    apps = max(1, per_ns // replicas)
    k = 0
    for n in range(n_ns):
        for p in range(per_ns):
            labels = {"app": f"app-{p % apps}", "role": "scraper" if p % apps == 0 else "web",
                      "pod-template-hash": f"h{p % apps}"}
            ip = f"10.{40 + k // 65000}.{(k // 250) % 256}.{k % 250 + 1}"
            st.pods[f"ns-{n}/pod-{p}"] = Pod(f"ns-{n}", f"pod-{p}", labels, node=f"node-{k % 20}", ip=ip, ports=PORTS)
            k += 1
    for i in range(n_policies):
        ns = f"ns-{i % n_ns}"
        st.policies[f"{ns}/pol-{i}"] = NetworkPolicy(ns, f"pol-{i}", policy_spec(i // n_ns, ns, apps))
    return st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--default-deny", action="store_true")
    ap.add_argument("--node", default=None, help="compile only this node's endpoints (e.g. node-3)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    st = build(a.pods, a.policies)
    fulls = []
    eng = PolicyEngine(default_deny=a.default_deny, node=a.node)
    for _ in range(a.rounds):
        eng = PolicyEngine(default_deny=a.default_deny, node=a.node)
        t0 = time.perf_counter()
        eps = eng.load(st)
        fulls.append(time.perf_counter() - t0)
    rules = sum(len(e.ingress.rules) + len(e.egress.rules) for e in eps.values())
    print(f"full compile: {a.pods} pods, {a.policies} policies, default_deny={a.default_deny}, node={a.node}: "
          f"median {statistics.median(fulls) * 1000:.0f} ms (min {min(fulls) * 1000:.0f}) -> {len(eps)} endpoints, "
          f"{rules} rule references, {len(eng.rejected)} rejected")
    # One pod label change per round, alternating so every round really changes something.
    incs, sizes = [], []
    victims = [k for k in sorted(st.pods) if k.endswith("/pod-1")][:20]
    for r in range(20):
        old = st.pods[victims[r]]
        labels = {**old.labels, "app": "app-0" if old.labels["app"] != "app-0" else "app-2"}
        new = Pod(old.namespace, old.name, labels, old.node, old.ip, old.host_ip, old.ports)
        t0 = time.perf_counter()
        delta = eng.upsert_pod(new)
        incs.append(time.perf_counter() - t0)
        sizes.append(len(delta))
    print(f"incremental, one pod label change: median {statistics.median(incs) * 1000:.1f} ms, "
          f"max {max(incs) * 1000:.1f} ms, changed endpoints per delta: median {statistics.median(sizes):.0f}, "
          f"max {max(sizes)}")


if __name__ == "__main__":
    main()
