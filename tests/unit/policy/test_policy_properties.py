"""Property tests: compiler + evaluate against the independent reference evaluator.

Worlds are small (3 namespaces, up to 7 pods, up to 5 policies) but dense in the hard parts:
overlapping selectors and policies, matchExpressions, ipBlock with except at odd prefix lengths
that cover pod IPs, named ports that some pods declare on different numbers, endPort ranges,
TCP/UDP/SCTP and traffic to/from addresses outside the cluster. Both families: most pods are
dual-stack (one IPv6-primary), one is IPv4-only and one IPv6-only, blocks and excepts are IPv4 or
IPv6, and every pair is decided once per family (a pod by its address of that family).
"""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_reference import RPod, RWorld, allowed

from novanet_core.policy import PolicyEngine
from novanet_core.state.model import ClusterState, ContainerPort, Namespace, NetworkPolicy, Pod, StateEvent

NSS = ("x", "y", "z")
POD_KEYS = {"app": ("web", "db"), "tier": ("fe", "be")}
NS_KEYS = {"team": ("red", "blue"), "env": ("prod", "dev")}
# Named ports: "http" sits on 80 or 8080 depending on the pod, so per-pod resolution matters.
PORT_CHOICES = (("http", 80, "TCP"), ("http", 8080, "TCP"), ("dns", 53, "UDP"), ("metrics", 81, "SCTP"),
                ("alt", 81, "TCP"), ("dns", 53, "TCP"))
CIDRS = ("10.0.0.0/24", "10.0.0.0/30", "10.0.0.4/31", "10.0.0.0/29", "10.0.1.0/24", "10.0.0.0/16",
         "0.0.0.0/0", "192.168.0.0/16", "10.0.0.3/32")
EXTERNAL = ("192.168.1.1", "8.8.8.8", "10.0.0.200")
# The same shapes in IPv6: pods i < 5 are fd00::{i + 1}, the others fd00:0:0:1::{i}.
CIDRS6 = ("fd00::/64", "fd00::/126", "fd00::4/127", "fd00::/125", "fd00:0:0:1::/64", "fd00::/48", "::/0",
          "2001:db8::/32", "fd00::3/128")
EXTERNAL6 = ("2001:db8::1", "2606:4700::1111", "fd00::c8")
HOSTS6 = ["fd00::1", "fd00::2", "fd00::3", "fd00::5", "fd00:0:0:1::5", "fd00::c8", "2001:db8::1", "2606:4700::1111"]
TRAFFIC = (("TCP", 80), ("TCP", 81), ("TCP", 85), ("TCP", 8080), ("UDP", 53), ("TCP", 53), ("SCTP", 81),
           ("SCTP", 85), ("TCP", 90))


def labels_st(vocab: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(sorted(vocab)), st.sampled_from(("web", "db", "fe", "be", "red", "blue",
                                                                             "prod", "dev")), max_size=2).map(
        lambda d: {k: (v if v in vocab[k] else vocab[k][0]) for k, v in d.items()})


def selector_st(vocab: dict[str, tuple[str, ...]], ns_name: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(vocab) + (["kubernetes.io/metadata.name"] if ns_name else [])
    values = sorted({v for vs in vocab.values() for v in vs} | (set(NSS) if ns_name else set()))
    expr = st.one_of(
        st.builds(lambda k, op, vs: {"key": k, "operator": op, "values": vs}, st.sampled_from(keys),
                  st.sampled_from(("In", "NotIn")), st.lists(st.sampled_from(values), min_size=1, max_size=2,
                                                              unique=True)),
        st.builds(lambda k, op: {"key": k, "operator": op}, st.sampled_from(keys),
                  st.sampled_from(("Exists", "DoesNotExist"))),
    )
    return st.one_of(
        st.just({}),
        st.builds(lambda d: {"matchLabels": d}, st.dictionaries(st.sampled_from(keys), st.sampled_from(values),
                                                                min_size=1, max_size=2)),
        st.builds(lambda es: {"matchExpressions": es}, st.lists(expr, min_size=1, max_size=2)),
        st.builds(lambda d, es: {"matchLabels": d, "matchExpressions": es},
                  st.dictionaries(st.sampled_from(keys), st.sampled_from(values), min_size=1, max_size=1),
                  st.lists(expr, min_size=1, max_size=1)),
    )


@st.composite
def ip_block_st(draw: st.DrawFn) -> dict[str, Any]:
    import ipaddress

    cidr = draw(st.sampled_from(CIDRS + CIDRS6))
    net = ipaddress.ip_network(cidr)
    excepts = []
    for _ in range(draw(st.integers(0, 3))):
        if net.prefixlen >= net.max_prefixlen:
            break
        plen = draw(st.integers(net.prefixlen + 1, net.max_prefixlen))
        host = draw(st.sampled_from(HOSTS6 if net.version == 6 else [
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.1.5", "10.0.0.200", "192.168.1.1", "8.8.8.8"]))
        sub = ipaddress.ip_network(f"{host}/{plen}", strict=False)
        if sub.subnet_of(net):
            excepts.append(str(sub))
    blk: dict[str, Any] = {"cidr": cidr}
    if excepts:
        blk["except"] = excepts
    return {"ipBlock": blk}


# ipBlock twice: its except lists are where compilers go wrong most often.
peer_st = st.one_of(
    ip_block_st(),
    st.builds(lambda s: {"podSelector": s}, selector_st(POD_KEYS)),
    st.builds(lambda s: {"namespaceSelector": s}, selector_st(NS_KEYS, ns_name=True)),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, selector_st(POD_KEYS),
              selector_st(NS_KEYS, ns_name=True)),
    ip_block_st(),
)


@st.composite
def port_st(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    proto = draw(st.sampled_from((None, "TCP", "UDP", "SCTP")))
    if proto:
        out["protocol"] = proto
    kind = draw(st.sampled_from(("none", "num", "range", "range", "name", "name")))
    if kind == "num":
        out["port"] = draw(st.sampled_from((53, 80, 81, 8080)))
    elif kind == "range":
        out["port"] = draw(st.sampled_from((53, 79, 80, 81, 84)))
        out["endPort"] = out["port"] + draw(st.sampled_from((0, 1, 5, 10, 8000)))
    elif kind == "name":
        out["port"] = draw(st.sampled_from(("http", "dns", "metrics", "alt", "nope")))
    return out


rule_st = st.builds(
    lambda peers, ports: {k: v for k, v in (("peers", peers), ("ports", ports)) if v != "omit"},
    st.one_of(st.just("omit"), st.just([]), st.lists(peer_st, min_size=1, max_size=3)),
    st.one_of(st.just("omit"), st.just([]), st.lists(port_st(), min_size=1, max_size=3)),
)


@st.composite
def policy_st(draw: st.DrawFn, i: int) -> tuple[str, str, dict[str, Any]]:
    spec: dict[str, Any] = {"podSelector": draw(selector_st(POD_KEYS))}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        choice = draw(st.sampled_from(("omit", "empty", "rules")))
        if choice == "empty":
            spec[direction] = []
        elif choice == "rules":
            rules = []
            for r in draw(st.lists(rule_st, min_size=1, max_size=2)):
                rule = {}
                if "peers" in r:
                    rule[peer_key] = r["peers"]
                if "ports" in r:
                    rule["ports"] = r["ports"]
                rules.append(rule)
            spec[direction] = rules
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    return draw(st.sampled_from(NSS)), f"p{i}", spec


@st.composite
def world_st(draw: st.DrawFn) -> tuple[RWorld, ClusterState]:
    ns_labels = {n: draw(labels_st(NS_KEYS)) for n in NSS}
    pods = []
    n_pods = draw(st.integers(1, 7))
    for i in range(n_pods):
        ns = draw(st.sampled_from(NSS))
        ports = draw(st.lists(st.sampled_from(PORT_CHOICES), max_size=3, unique_by=lambda p: (p[0], p[2])))
        ip = f"10.0.0.{i + 1}" if i < 5 else f"10.0.1.{i}"
        ip6 = f"fd00::{i + 1}" if i < 5 else f"fd00:0:0:1::{i}"
        if i == 5:  # IPv4-only
            ip6 = None
        elif i == 6:  # IPv6-only
            ip, ip6 = ip6, None
        pods.append(RPod(ns, f"p{i}", draw(labels_st(POD_KEYS)), ip, list(ports), ip6))
    policies = [draw(policy_st(i)) for i in range(draw(st.integers(0, 5)))]
    world = RWorld(ns_labels, pods, [(ns, spec) for ns, _, spec in policies])
    state = ClusterState()
    for n, lab in ns_labels.items():
        state.namespaces[n] = Namespace(n, lab)
    for p in pods:
        cps = tuple(ContainerPort(port, proto, name) for name, port, proto in p.ports)
        # Two nodes, so that a node-scoped engine (the agent's) has remote pods to leave out.
        node = "n1" if int(p.name[1:]) % 3 else "n2"
        ips = tuple(a for a in (p.ip, p.ip6) if a)
        if p.name == "p3":  # IPv6-primary: status.podIPs lists IPv6 first
            ips = ips[::-1]
        state.pods[f"{p.namespace}/{p.name}"] = Pod(p.namespace, p.name, dict(p.labels), node=node, ip=ips[0],
                                                     ports=cps, ips=ips)
    for ns, name, spec in policies:
        state.policies[f"{ns}/{name}"] = NetworkPolicy(ns, name, copy.deepcopy(spec))
    return world, state


def _check(world: RWorld, state: ClusterState, default_deny: bool) -> int:
    eng = PolicyEngine(default_deny=default_deny)
    eng.load(state)
    assert not eng.rejected, eng.rejected
    n = 0
    for family, external in ((4, EXTERNAL), (6, EXTERNAL6)):
        # each end by its address of the family (the compiler finds the pod by any of its addresses)
        ends: list[tuple[RPod | str, str]] = [(p, a) for p in world.pods if (a := p.address(family))]
        ends += [(ip, ip) for ip in external]
        n += _check_family(world, eng, ends, default_deny, family)
    return n


def _check_family(world: RWorld, eng: PolicyEngine, ends: list[tuple[RPod | str, str]], default_deny: bool,
                  family: int) -> int:
    n = 0
    for src, skey in ends:
        for dst, dkey in ends:
            if isinstance(src, str) and isinstance(dst, str):
                continue
            for proto, port in TRAFFIC:
                want = allowed(world, src, dst, proto, port, default_deny, family)
                got = eng.evaluate(skey, dkey, proto, port)
                assert got.allowed == want, (
                    f"{skey} -> {dkey} {proto}/{port} (IPv{family}): compiler {got.reason!r}, reference says "
                    f"{'allowed' if want else 'denied'}\npolicies: {world.policies}\nns: {world.namespaces}\n"
                    f"pods: {world.pods}"
                )
                n += 1
    return n


# Each example decides every pair once per family: half the examples of the IPv4-only form.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st())
def test_compiler_matches_reference(w: tuple[RWorld, ClusterState]) -> None:
    _check(*w, default_deny=False)


@settings(max_examples=125, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st())
def test_default_deny_matches_reference(w: tuple[RWorld, ClusterState]) -> None:
    _check(*w, default_deny=True)


def _mutations(state: ClusterState, rnd: random.Random, extra_policies: list[NetworkPolicy]) -> list[tuple]:
    ops: list[tuple] = []
    pods = list(state.pods.values())
    for _ in range(6):
        kind = rnd.choice(("relabel", "delete_pod", "ns", "add_policy", "delete_policy", "repod"))
        if kind == "relabel" and pods:
            p = rnd.choice(pods)
            labels = {k: rnd.choice(v) for k, v in POD_KEYS.items() if rnd.random() < 0.5}
            ops.append(("pod", Pod(p.namespace, p.name, labels, p.node, p.ip, p.host_ip, p.ports, p.ips)))
        elif kind == "repod" and pods:
            p = rnd.choice(pods)
            ports = tuple(ContainerPort(port, proto, name) for name, port, proto in
                          rnd.sample(PORT_CHOICES, rnd.randint(0, 2)))
            ops.append(("pod", Pod(p.namespace, p.name, dict(p.labels), p.node, p.ip, p.host_ip, ports, p.ips)))
        elif kind == "delete_pod" and pods:
            ops.append(("delete_pod", rnd.choice(pods).key))
        elif kind == "ns":
            n = rnd.choice(NSS)
            ops.append(("ns", Namespace(n, {k: rnd.choice(v) for k, v in NS_KEYS.items() if rnd.random() < 0.5})))
        elif kind == "add_policy" and extra_policies:
            ops.append(("policy", extra_policies.pop()))
        elif kind == "delete_policy" and state.policies:
            ops.append(("delete_policy", rnd.choice(sorted(state.policies))))
    return ops


def _event(state: ClusterState, op: str, arg) -> tuple[StateEvent | None, object]:
    """The state-source event of a mutation and the object it replaces, as the agent sees them
    (None: a delete of what is not there, which no source sends)."""
    kind = {"pod": "Pod", "delete_pod": "Pod", "ns": "Namespace"}.get(op, "NetworkPolicy")
    table = state.table(kind)
    if op.startswith("delete"):
        old = table.get(arg)
        return (StateEvent("DELETED", kind, old) if old is not None else None), old
    old = table.get(arg.key)
    return StateEvent("MODIFIED" if old is not None else "ADDED", kind, arg), old


def _incremental(w: tuple[RWorld, ClusterState], other: tuple[RWorld, ClusterState], default_deny: bool,
                 node: str | None, rnd: random.Random, shared: bool) -> None:
    _, state = w
    extra = [NetworkPolicy(p.namespace, p.name + "x", p.spec) for p in other[1].policies.values()]
    # shared: the engine reads the caller's state, which takes each event in first (the agent's way)
    eng = PolicyEngine(default_deny=default_deny, node=node, state=state if shared else None)
    mirror = dict(eng.load(state))
    for op, arg in _mutations(state, rnd, extra):
        ev, old = _event(state, op, arg)
        if shared:
            delta = {}
            if ev is not None:
                state.apply(ev)
                delta = eng.apply(ev, old)
        elif op == "pod":
            state.pods[arg.key] = arg
            delta = eng.upsert_pod(arg)
        elif op == "delete_pod":
            state.pods.pop(arg, None)
            delta = eng.delete_pod(arg)
        elif op == "ns":
            state.namespaces[arg.name] = arg
            delta = eng.upsert_namespace(arg)
        elif op == "policy":
            state.policies[arg.key] = arg
            delta = eng.upsert_policy(arg)
        else:
            state.policies.pop(arg, None)
            delta = eng.delete_policy(arg)
        for key, ep in delta.items():
            if ep is None:
                assert key in mirror, f"delta removes {key} which was not there"
                del mirror[key]
            else:
                assert mirror.get(key) != ep, f"delta for {key} carries no change"
                mirror[key] = ep
        full = PolicyEngine(default_deny=default_deny, node=node).load(state)
        assert mirror == full, f"after {op}: incremental state differs from a full compile"
        assert eng.endpoints == full


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st(), world_st(), st.booleans(), st.sampled_from([None, "n1"]), st.randoms(use_true_random=False))
def test_incremental_deltas_equal_full_compile(w: tuple[RWorld, ClusterState], other: tuple[RWorld, ClusterState],
                                               default_deny: bool, node: str | None, rnd: random.Random) -> None:
    """After each change the delta, applied to the previous endpoints, gives a full recompile:
    for the whole cluster (node=None) and for one node's endpoints, as an agent compiles them."""
    _incremental(w, other, default_deny, node, rnd, shared=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st(), world_st(), st.booleans(), st.sampled_from([None, "n1"]), st.randoms(use_true_random=False))
def test_incremental_deltas_on_the_owners_state_equal_full_compile(
        w: tuple[RWorld, ClusterState], other: tuple[RWorld, ClusterState], default_deny: bool, node: str | None,
        rnd: random.Random) -> None:
    """The same with the engine reading its owner's state (the agent's), which has already taken
    in each event when the engine is told, with the object the event replaced."""
    _incremental(w, other, default_deny, node, rnd, shared=True)
