"""Transcription of the 48 upstream netpol e2e cases into ``cases/*.yaml`` (run to regenerate).

Source: kubernetes/kubernetes ``test/e2e/network/netpol/network_policy.go``, read at 9db638c0
(the 9-pod x,y,z × a,b,c model that probes all 81 pairs) and cross-checked against 008b3652
(which probes subsets; its policies and ``Expect*`` calls are the same except where noted).
The policies are written as the e2e helpers build them (``SetSpecIngressRules`` appends
``Ingress`` to ``policyTypes``, ``SetSpecEgressRules`` appends ``Egress``), and the truth tables
are produced by replaying the upstream ``Reachability`` calls (``Expect``, ``ExpectPeer``,
``ExpectAllIngress``, ``ExpectAllEgress``) on an all-allowed 9×9 table, exactly as the suite does.
Nothing here evaluates a policy: this file only writes down what upstream expects.

    .venv/bin/python tests/netpol_cases/transcribe.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS = tuple(f"{n}/{p}" for n in NAMESPACES for p in POD_NAMES)
NS_LABEL = "kubernetes.io/metadata.name"
SOURCE = "kubernetes/kubernetes test/e2e/network/netpol/network_policy.go@9db638c0"


class Reachability:
    """Upstream ``NewReachability(pods, true)`` and its ``Expect*`` methods."""

    def __init__(self) -> None:
        self.cells = {(f, t): True for f in PODS for t in PODS}

    @staticmethod
    def _match(pod: str, ns: str | None, name: str | None) -> bool:
        n, p = pod.split("/")
        return (ns is None or n == ns) and (name is None or p == name)

    def expect(self, frm: str, to: str, v: bool) -> Reachability:
        self.cells[(frm, to)] = v
        return self

    def peer(self, frm: tuple[str | None, str | None], to: tuple[str | None, str | None], v: bool) -> Reachability:
        for f in PODS:
            for t in PODS:
                if self._match(f, *frm) and self._match(t, *to):
                    self.cells[(f, t)] = v
        return self

    def all_ingress(self, pod: str, v: bool) -> Reachability:
        return self.peer((None, None), tuple(pod.split("/")), v)  # type: ignore[arg-type]

    def all_egress(self, pod: str, v: bool) -> Reachability:
        return self.peer(tuple(pod.split("/")), (None, None), v)  # type: ignore[arg-type]

    def table(self) -> str:
        # Upstream prints tab-separated; spaces keep the YAML block readable (the loader splits on
        # any whitespace).
        lines = [" ".join(["-  ", *PODS])]
        for f in PODS:
            lines.append(" ".join([f, *(f"{'.' if self.cells[(f, t)] else 'X':<3}" for t in PODS)]).rstrip())
        return "\n".join(lines) + "\n"


ANY: tuple[None, None] = (None, None)


def ns(n: str) -> tuple[str, None]:
    return (n, None)


def pod(k: str) -> tuple[str, str]:
    a, b = k.split("/")
    return (a, b)


def policy(name: str, namespace: str, pod_selector: dict[str, Any], ingress: list[Any] | None = None,
           egress: list[Any] | None = None, policy_types: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector}
    types = []
    if ingress is not None:
        spec["ingress"] = ingress
        types.append("Ingress")
    if egress is not None:
        spec["egress"] = egress
        types.append("Egress")
    spec["policyTypes"] = policy_types or types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ml(**labels: str) -> dict[str, Any]:
    return {"matchLabels": dict(labels)}


def nsname(n: str) -> dict[str, Any]:
    return {"matchLabels": {NS_LABEL: n}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}


def probe(protocol: str, port: int, r: Reachability) -> dict[str, Any]:
    return {"protocol": protocol, "port": port, "truth": r.table()}


def step(actions: list[dict[str, Any]], *probes: dict[str, Any]) -> dict[str, Any]:
    return {"do": actions, "probes": list(probes)}


def create(p: dict[str, Any]) -> dict[str, Any]:
    return {"create_policy": p}


def R() -> Reachability:
    return Reachability()


POD_A = ml(pod="a")
EMPTY: dict[str, Any] = {}


def tcp_cases() -> list[tuple[str, list[str], list[int], list[dict[str, Any]], str]]:
    """(name, protocols, ports, steps, note) for the 42 cases of the TCP context."""
    c: list[tuple[str, list[str], list[int], list[dict[str, Any]], str]] = []
    T = ["TCP"]

    def add(name: str, steps: list[dict[str, Any]], ports: list[int] | None = None,
            protocols: list[str] | None = None, note: str = "") -> None:
        c.append((name, protocols or T, ports or [80], steps, note))

    add("should support a 'default-deny-ingress' policy",
        [step([create(policy("deny-ingress", "x", EMPTY, ingress=[]))],
              probe("TCP", 80, R().peer(ANY, ns("x"), False)))])
    add("should support a 'default-deny-all' policy",
        [step([create(policy("deny-all", "x", EMPTY, ingress=[], egress=[]))],
              probe("TCP", 80, R().peer(ANY, ns("x"), False).peer(ns("x"), ANY, False)))])
    add("should enforce policy to allow traffic from pods within server namespace based on PodSelector",
        [step([create(policy("x-a-allows-x-b", "x", POD_A, ingress=[{"from": [{"podSelector": ml(pod="b")}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("x/b", "x/a", True)))])
    add("should enforce policy to allow ingress traffic for a target",
        [step([create(policy("deny-all", "x", EMPTY, ingress=[])),
               create(policy("allow-all-to-a", "x", POD_A,
                             ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", True).all_ingress("x/b", False).all_ingress("x/c", False)))])
    add("should enforce policy to allow ingress traffic from pods in all namespaces",
        [step([create(policy("allow-from-another-ns", "x", POD_A, ingress=[{"from": [{"namespaceSelector": {}}]}]))],
              probe("TCP", 80, R()))])
    add("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
        [step([create(policy("allow-client-a-via-ns-selector", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": nsname("y")}]}]))],
              probe("TCP", 80, R().peer(ns("x"), pod("x/a"), False).peer(ns("z"), pod("x/a"), False)))])
    add("should enforce policy based on PodSelector with MatchExpressions",
        [step([create(policy("x-a-allows-x-b", "x", POD_A,
                             ingress=[{"from": [{"podSelector": expr("pod", "In", "b")}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("x/b", "x/a", True)))])
    add("should enforce policy based on NamespaceSelector with MatchExpressions",
        [step([create(policy("allow-ns-y-match-selector", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": expr(NS_LABEL, "In", "y")}]}]))],
              probe("TCP", 80, R().peer(ns("x"), pod("x/a"), False).peer(ns("z"), pod("x/a"), False)))])
    add("should enforce policy based on PodSelector or NamespaceSelector",
        [step([create(policy("allow-ns-y-match-selector", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": expr(NS_LABEL, "NotIn", "x")},
                                                {"podSelector": ml(pod="b")}]}]))],
              probe("TCP", 80, R().expect("x/a", "x/a", False).expect("x/c", "x/a", False)))])
    add("should enforce policy based on PodSelector and NamespaceSelector",
        [step([create(policy("allow-ns-y-podselector-and-nsselector", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": expr(NS_LABEL, "NotIn", "x"),
                                                 "podSelector": ml(pod="b")}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("y/b", "x/a", True).expect("z/b", "x/a", True)))])
    add("should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
        [step([create(policy("allow-ns-y-z-pod-b-c", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": expr(NS_LABEL, "NotIn", "x"),
                                                 "podSelector": expr("pod", "In", "b", "c")}]}]))],
              probe("TCP", 80, R().peer(ns("x"), pod("x/a"), False).expect("y/a", "x/a", False)
                    .expect("z/a", "x/a", False)))])
    add("should enforce policy based on any PodSelectors",
        [step([create(policy("allow-ns-x-pod-b-c", "x", POD_A,
                             ingress=[{"from": [{"podSelector": ml(pod="b")}, {"podSelector": ml(pod="c")}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("x/b", "x/a", True).expect("x/c", "x/a", True)))])
    add("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector "
        "and NamespaceSelector",
        [step([create(policy("allow-ns-y-pod-a-via-namespace-pod-selector", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": nsname("y"), "podSelector": POD_A}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("y/a", "x/a", True)))])
    p81 = policy("allow-client-a-via-ns-selector", "x", POD_A,
                 ingress=[{"from": [{"namespaceSelector": nsname("y")}], "ports": [{"port": 81, "protocol": "TCP"}]}])
    allow81 = R().peer(ns("x"), pod("x/a"), False).peer(ns("y"), pod("x/a"), True).peer(ns("z"), pod("x/a"), False)
    add("should enforce policy based on Ports", [step([create(p81)], probe("TCP", 81, allow81))], ports=[81])
    p80 = policy("allow-client-a-via-ns-selector-80", "x", POD_A,
                 ingress=[{"from": [{"namespaceSelector": nsname("y")}], "ports": [{"port": 80, "protocol": "TCP"}]}])
    add("should enforce multiple, stacked policies with overlapping podSelectors",
        [step([create(p81)], probe("TCP", 81, allow81), probe("TCP", 80, R().all_ingress("x/a", False))),
         step([create(p80)], probe("TCP", 80, allow81))], ports=[80, 81])
    add("should support allow-all policy",
        [step([create(policy("allow-all", "x", EMPTY, ingress=[{}]))], probe("TCP", 80, R()), probe("TCP", 81, R()))],
        ports=[80, 81])
    add("should allow ingress access on one named port",
        [step([create(policy("allow-all", "x", EMPTY, ingress=[{"ports": [{"port": "serve-81-tcp"}]}]))],
              probe("TCP", 81, R()), probe("TCP", 80, R().peer(ANY, ns("x"), False)))], ports=[80, 81])
    add("should allow ingress access from namespace on one named port",
        [step([create(policy("allow-client-a-via-ns-selector-80", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": nsname("y")}],
                                       "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]))],
              probe("TCP", 80, R().peer(ns("x"), pod("x/a"), False).peer(ns("z"), pod("x/a"), False)),
              probe("TCP", 81, R().all_ingress("x/a", False)))], ports=[80, 81])
    add("should allow egress access on one named port",
        [step([create(policy("allow-egress", "x", EMPTY, egress=[{"ports": [{"port": "serve-80-tcp"}]}]))],
              probe("TCP", 80, R()), probe("TCP", 81, R().peer(ns("x"), ANY, False)))], ports=[80, 81])
    mutate = policy("allow-all-mutate-to-deny-all", "x", EMPTY, ingress=[{}])
    mutated = policy("allow-all-mutate-to-deny-all", "x", EMPTY, ingress=[])
    add("should enforce updated policy",
        [step([create(mutate)], probe("TCP", 81, R())),
         step([{"update_policy": mutated}], probe("TCP", 81, R().peer(ANY, ns("x"), False)))], ports=[81])
    add("should allow ingress access from updated namespace",
        [step([create(policy("allow-client-a-via-ns-selector", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": ml(ns2="updated")}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False))),
         step([{"add_namespace_labels": {"namespace": "y", "labels": {"ns2": "updated"}}}],
              probe("TCP", 80, R().all_ingress("x/a", False).peer(ns("y"), ANY, True)))])
    add("should allow ingress access from updated pod",
        [step([create(policy("allow-client-a-via-pod-selector", "x", POD_A,
                             ingress=[{"from": [{"podSelector": ml(pod="b", pod2="updated")}]}]))],
              probe("TCP", 80, R().all_ingress("x/a", False))),
         step([{"add_pod_labels": {"pod": "x/b", "labels": {"pod": "b", "pod2": "updated"}}}],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("x/b", "x/a", True)))])
    add("should deny ingress from pods on other namespaces",
        [step([create(policy("deny-empty-policy", "x", EMPTY, ingress=[{"from": [{"podSelector": {}}]}]))],
              probe("TCP", 80, R().peer(ns("y"), ns("x"), False).peer(ns("z"), ns("x"), False)))])
    add("should deny ingress access to updated pod",
        [step([create(policy("deny-ingress-via-label-selector", "x", ml(target="isolated"), ingress=[]))],
              probe("TCP", 80, R())),
         step([{"add_pod_labels": {"pod": "x/a", "labels": {"target": "isolated"}}}],
              probe("TCP", 80, R().all_ingress("x/a", False)))])
    add("should deny egress from pods based on PodSelector",
        [step([create(policy("deny-egress-pod-a", "x", POD_A, egress=[]))],
              probe("TCP", 80, R().all_egress("x/a", False)))])
    add("should deny egress from all pods in a namespace",
        [step([create(policy("deny-egress-ns-x", "x", EMPTY, egress=[]))],
              probe("TCP", 80, R().peer(ns("x"), ANY, False)))])
    add("should work with Ingress, Egress specified together",
        [step([create(policy("allow-client-a-via-pod-selector", "x", POD_A,
                             ingress=[{"from": [{"podSelector": ml(pod="b")}]}],
                             egress=[{"ports": [{"port": 80}]}], policy_types=["Egress", "Ingress"]))],
              probe("TCP", 80, R().all_ingress("x/a", False).expect("x/b", "x/a", True)),
              probe("TCP", 81, R().all_ingress("x/a", False).all_egress("x/a", False).expect("x/b", "x/a", True)))],
        ports=[80, 81])
    from_xa = [{"from": [{"namespaceSelector": nsname("x"), "podSelector": POD_A}]}]
    add("should support denying of egress traffic on the client side (even if the server explicitly allows this "
        "traffic)",
        [step([create(policy("allow-to-ns-y-pod-a", "x", POD_A,
                             egress=[{"to": [{"namespaceSelector": nsname("y"), "podSelector": POD_A}]}])),
               create(policy("allow-from-xa-on-ya-match-selector", "y", POD_A, ingress=from_xa)),
               create(policy("allow-from-xa-on-yb-match-selector", "y", ml(pod="b"), ingress=from_xa))],
              probe("TCP", 80, R().peer(pod("x/a"), ANY, False).peer(ANY, pod("y/a"), False)
                    .peer(pod("x/a"), pod("y/a"), True).peer(ANY, pod("y/b"), False)))])
    add("should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector "
        "and NamespaceSelector",
        [step([create(policy("allow-to-ns-y-pod-a", "x", POD_A,
                             egress=[{"to": [{"namespaceSelector": nsname("y"), "podSelector": POD_A}]}]))],
              probe("TCP", 80, R().all_egress("x/a", False).expect("x/a", "y/a", True)))])
    add("should enforce ingress policy allowing any port traffic to a server on a specific protocol",
        [step([create(policy("allow-ingress-by-proto", "x", POD_A, ingress=[{"ports": [{"protocol": "TCP"}]}]))],
              probe("TCP", 80, R()), probe("UDP", 80, R().peer(ANY, pod("x/a"), False)))],
        protocols=["TCP", "UDP"])
    add("should enforce multiple ingress policies with ingress allow-all policy taking precedence",
        [step([create(policy("allow-ingress-port-80", "x", EMPTY, ingress=[{"ports": [{"port": 80}]}]))],
              probe("TCP", 81, R().peer(ANY, ns("x"), False))),
         step([create(policy("allow-ingress", "x", EMPTY, ingress=[{}]))], probe("TCP", 81, R()))], ports=[81])
    add("should enforce multiple egress policies with egress allow-all policy taking precedence",
        [step([create(policy("allow-egress-port-80", "x", EMPTY, egress=[{"ports": [{"port": 80}]}]))],
              probe("TCP", 81, R().peer(ns("x"), ANY, False))),
         step([create(policy("allow-egress", "x", EMPTY, egress=[{}]))], probe("TCP", 81, R()))], ports=[81])
    add("should stop enforcing policies after they are deleted",
        [step([create(policy("deny-all", "x", EMPTY, ingress=[], egress=[]))],
              probe("TCP", 80, R().peer(ns("x"), ANY, False).peer(ANY, ns("x"), False))),
         step([{"delete_all_policies": True}], probe("TCP", 80, R()))])
    cidr_name = "allow-client-a-via-cidr-egress-rule"
    add("should allow egress access to server in CIDR block",
        [step([create(policy(cidr_name, "x", POD_A, egress=[{"to": [{"ipBlock": {"cidr": "$(hostcidr:y/b)"}}]}]))],
              probe("TCP", 80, R().all_egress("x/a", False).expect("x/a", "y/b", True)))])
    except_policy = policy(cidr_name, "x", POD_A, egress=[{"to": [{"ipBlock": {
        "cidr": "$(largecidr:x/b)", "except": ["$(hostcidr:x/b)"]}}]}])
    add("should enforce except clause while egress access to server in CIDR block",
        [step([create(except_policy)], probe("TCP", 80, R().expect("x/a", "x/b", False)))],
        note="cidr is the /4 containing x/b (008b3652 makeLargeCIDRForIP); 9db638c0 wrote x/a's IP with /4")
    add("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        [step([create(except_policy)], probe("TCP", 80, R().expect("x/a", "x/b", False))),
         step([{"update_policy": policy(cidr_name, "x", POD_A,
                                        egress=[{"to": [{"ipBlock": {"cidr": "$(hostcidr:x/b)"}}]}])}],
              probe("TCP", 80, R().all_egress("x/a", False).expect("x/a", "x/b", True)))],
        note="same /4 note as the except-clause case")
    add("should enforce policies to check ingress and egress policies can be controlled independently based on "
        "PodSelector",
        [step([create(policy("allow-egress-for-target", "x", POD_A, egress=[{}]))], probe("TCP", 80, R())),
         step([create(policy("deny-ingress-via-label-selector", "x", POD_A, ingress=[]))],
              probe("TCP", 80, R().all_ingress("x/a", False)))])
    add("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
        [step([create(policy("deny-ingress", "x", EMPTY, ingress=[])),
               create(policy("allow-only-sctp-ingress-on-port-81", "x", POD_A,
                             ingress=[{"ports": [{"port": 81, "protocol": "SCTP"}]}]))],
              probe("TCP", 81, R().peer(ANY, ns("x"), False)))], ports=[81])
    add("should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't "
        "support SCTP",
        [step([create(policy("allow-only-sctp-ingress-on-port-80", "x", POD_A,
                             ingress=[{"ports": [{"port": 80, "protocol": "SCTP"}]}]))],
              probe("TCP", 81, R().all_ingress("x/a", False)))], ports=[81])
    add("should not allow access by TCP when a policy specifies only UDP",
        [step([create(policy("allow-only-udp-ingress-on-port-81", "x", POD_A,
                             ingress=[{"ports": [{"port": 81, "protocol": "UDP"}]}]))],
              probe("TCP", 81, R().all_ingress("x/a", False)))], ports=[81])
    add("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
        [step([create(policy("allow-client-a-via-ns-selector-for-immutable-ns-label", "x", POD_A,
                             ingress=[{"from": [{"namespaceSelector": nsname("y")}]}]))],
              probe("TCP", 80, R().peer(ns("x"), pod("x/a"), False).peer(ns("z"), pod("x/a"), False)))])
    add("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
        [step([create(policy("allow-ns-y-match-selector-for-immutable-ns-label", "x", POD_A,
                             egress=[{"to": [{"namespaceSelector": expr(NS_LABEL, "NotIn", "y")}]}]))],
              probe("TCP", 80, R().peer(pod("x/a"), ns("y"), False)))])
    return c


def proto_cases(proto: str) -> list[tuple[str, list[str], list[int], list[dict[str, Any]], str]]:
    """The three cases repeated in the UDP and SCTP contexts."""
    return [
        ("should support a 'default-deny-ingress' policy", [proto], [80],
         [step([create(policy("deny-all", "x", EMPTY, ingress=[]))],
               probe(proto, 80, R().peer(ANY, ns("x"), False)))], ""),
        ("should enforce policy based on Ports", [proto], [81],
         [step([create(policy("allow-ingress-on-port-81-ns-x", "x", POD_A,
                              ingress=[{"from": [{"namespaceSelector": nsname("y")}],
                                        "ports": [{"port": 81, "protocol": proto}]}]))],
               probe(proto, 81, R().peer(ns("x"), pod("x/a"), False).peer(ns("z"), pod("x/a"), False)))], ""),
        ("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and "
         "NamespaceSelector", [proto], [80],
         [step([create(policy("allow-ns-y-pod-a-via-namespace-pod-selector", "x", POD_A,
                              ingress=[{"from": [{"namespaceSelector": nsname("y"), "podSelector": POD_A}]}]))],
               probe(proto, 80, R().all_ingress("x/a", False).expect("y/a", "x/a", True)))], ""),
    ]


CONTEXTS = {
    "TCP": "Netpol NetworkPolicy between server and client",
    "UDP": "Netpol [LinuxOnly] NetworkPolicy between server and client using UDP",
    "SCTP": "Netpol [Feature:SCTPConnectivity][LinuxOnly] NetworkPolicy between server and client using SCTP",
}


def _slug(s: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in s.lower().removeprefix("should "))
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")[:60].rstrip("-")


class _Literal(str):
    pass


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # every case file stands alone, no &anchors
        return True


_Dumper.add_representer(
    _Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", str(s), style="|")
)


def main() -> None:
    out = Path(__file__).parent / "cases"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    all_cases = [("TCP", c) for c in tcp_cases()] + [("UDP", c) for c in proto_cases("UDP")] + [
        ("SCTP", c) for c in proto_cases("SCTP")]
    assert len(all_cases) == 48
    for i, (ctx, (name, protocols, ports, steps, note)) in enumerate(all_cases, 1):
        for s in steps:
            for p in s["probes"]:
                p["truth"] = _Literal(p["truth"])
        doc: dict[str, Any] = {"id": i, "name": name, "context": CONTEXTS[ctx], "source": SOURCE,
                               "model": {"protocols": protocols, "ports": ports}, "steps": steps}
        if note:
            doc["note"] = note
        path = out / f"{i:02d}-{ctx.lower()}-{_slug(name)}.yaml"
        path.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False))


if __name__ == "__main__":
    main()
