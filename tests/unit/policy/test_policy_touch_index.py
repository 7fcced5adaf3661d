"""The candidate index behind a pod event: it narrows by the label pairs the selectors require,
so a pod event visits the policies that can pick that pod, not every policy with a
namespaceSelector. (That the narrowed incremental compile equals a full one is the property test
in test_policy_properties.py.)"""

from __future__ import annotations

from typing import Any

from novanet_core.policy import PolicyEngine
from novanet_core.state.model import ClusterState, Namespace, NetworkPolicy, Pod


def _policy(ns: str, name: str, target: dict[str, Any], peer: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy(ns, name, {"podSelector": target, "policyTypes": ["Ingress"], "ingress": [{"from": [peer]}]})


def _engine() -> PolicyEngine:
    state = ClusterState()
    for ns in ("a", "b"):
        state.namespaces[ns] = Namespace(ns, {"team": ns})
    pols = [
        # own namespace, anchored on app=web
        _policy("a", "own", {"matchLabels": {"app": "db"}}, {"podSelector": {"matchLabels": {"app": "web"}}}),
        # any namespace with team=b, anchored on app=web or app=api
        _policy("a", "wide", {"matchLabels": {"app": "db"}},
                {"namespaceSelector": {"matchLabels": {"team": "b"}},
                 "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}}),
        # any namespace, no label pair required: a candidate for every pod
        _policy("a", "exists", {"matchLabels": {"app": "db"}},
                {"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}),
        # a selector that requires nothing, confined to namespace b
        _policy("b", "all-in-b", {}, {"podSelector": {}}),
    ]
    for p in pols:
        state.policies[p.key] = p
    eng = PolicyEngine()
    eng.load(state)
    return eng


def _candidates(eng: PolicyEngine, ns: str, labels: dict[str, str]) -> set[str]:
    pod = Pod(ns, "p", labels, node="n", ip="10.0.0.9")
    eng._policies_touching(pod)  # builds the index
    assert eng._touch is not None
    return eng._touch.candidates(ns, labels)


def test_a_pod_is_a_candidate_only_of_policies_that_require_its_labels() -> None:
    eng = _engine()
    assert _candidates(eng, "a", {"app": "web"}) == {"a/own", "a/wide", "a/exists"}
    assert _candidates(eng, "a", {"app": "cache"}) == {"a/exists"}
    assert _candidates(eng, "b", {"app": "api"}) == {"a/wide", "a/exists", "b/all-in-b"}
    assert _candidates(eng, "b", {"tier": "x"}) == {"a/exists", "b/all-in-b"}


def test_the_exact_match_is_still_applied_to_the_candidates() -> None:
    eng = _engine()
    # app=web in namespace a is a candidate of a/wide (label pair) but a/wide wants team=b namespaces
    assert eng._policies_touching(Pod("a", "p", {"app": "web"}, node="n", ip="10.0.0.9")) == {"a/own", "a/exists"}
    # the target selector counts too: app=db in a is picked by all three of a's policies
    assert eng._policies_touching(Pod("a", "p", {"app": "db"}, node="n", ip="10.0.0.9")) == {
        "a/own", "a/wide", "a/exists"}


def test_the_index_follows_policy_changes() -> None:
    eng = _engine()
    assert "a/later" not in _candidates(eng, "a", {"app": "cache"})
    eng.upsert_policy(_policy("a", "later", {"matchLabels": {"app": "x"}},
                              {"podSelector": {"matchLabels": {"app": "cache"}}}))
    assert "a/later" in _candidates(eng, "a", {"app": "cache"})
    eng.delete_policy("a/later")
    assert "a/later" not in _candidates(eng, "a", {"app": "cache"})
