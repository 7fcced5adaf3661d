"""Validation messages name the field; invalid policies are reported and never half-enforced."""

from __future__ import annotations

import logging

import pytest

from novanet_core.policy import PolicyEngine, PolicyValidationError, check_spec, validate_spec
from novanet_core.state.model import ClusterState, ContainerPort, Namespace, NetworkPolicy, Pod


def one(spec: object) -> str:
    errs = validate_spec(spec)
    assert len(errs) == 1, errs
    return errs[0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["10.0.0.0/8"]}}]}]},
         "spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 192.168.0.0/16"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
         "spec.egress[0].to[0].ipBlock.cidr: '10.0.0.0/33' is not a valid CIDR"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 10.0.0.0/8"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]: fd00::/64 is not the same address family as cidr 10.0.0.0/8"),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/16", "except": ["fd00:1::/32", "10.0.0.0/8"]}}]}]},
         "spec.ingress[0].from[0].ipBlock.except[1]: 10.0.0.0/8 is not the same address family as cidr fd00::/16"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "fd00:42::/48", "except": ["fd00:43::/64"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]: fd00:43::/64 is not inside cidr fd00:42::/48"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "fd00:42::/48", "except": ["fd00:42::/48"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]: fd00:42::/48 is not inside cidr fd00:42::/48"),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/129"}}]}]},
         "spec.ingress[0].from[0].ipBlock.cidr: 'fd00::/129' is not a valid CIDR"),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/16", "except": ["fd00:1::/200"]}}]}]},
         "spec.ingress[0].from[0].ipBlock.except[0]: 'fd00:1::/200' is not a valid CIDR"),
        ({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
         "spec.ingress[0].ports[0].endPort: 80 is less than port 90"),
        ({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]},
         "spec.ingress[0].ports[0].endPort: may not be used with a named port (http)"),
        ({"ingress": [{"ports": [{"endPort": 80}]}]},
         "spec.ingress[0].ports[0].endPort: may not be set without port"),
        ({"ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]},
         "spec.ingress[0].ports[0].protocol: 'ICMP' is not a supported protocol (TCP, UDP, SCTP)"),
        ({"ingress": [{"ports": [{"port": 70000}]}]}, "spec.ingress[0].ports[0].port: 70000 is not in 1..65535"),
        ({"ingress": [{"ports": [{"port": "Bad_Name"}]}]},
         "spec.ingress[0].ports[0].port: 'Bad_Name' is not a valid port name (IANA_SVC_NAME, 1..15 chars)"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}},
         "spec.podSelector.matchExpressions[0].operator: 'Equals' is not a valid selector operator "
         "(In, NotIn, Exists, DoesNotExist)"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
         "spec.podSelector.matchExpressions[0].values: must be non-empty when operator is In"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
         "spec.podSelector.matchExpressions[0].values: must be empty when operator is Exists"),
        ({"podSelector": {"matchLabels": {"app": 3}}}, "spec.podSelector.matchLabels.app: value 3 must be a string"),
        ({"policyTypes": ["Ingress", "Both"]}, "spec.policyTypes[1]: 'Both' is not Ingress or Egress"),
        ({"policyTypes": "Ingress"}, "spec.policyTypes: must be a list"),
        ({"ingress": {"from": []}}, "spec.ingress: must be a list of rules"),
        ({"ingress": [{"form": [{"podSelector": {}}]}]},
         "spec.ingress[0].form: unknown field (expected one of from, ports)"),
        ({"ingress": [{"from": [{}]}]},
         "spec.ingress[0].from[0]: must specify podSelector, namespaceSelector or ipBlock"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
         "spec.egress[0].to[0]: ipBlock may not be combined with podSelector or namespaceSelector"),
        ("not a map", "spec: must be a map"),
    ],
)
def test_validation_message_names_the_field(spec: object, message: str) -> None:
    assert one(spec) == message


def test_valid_specs_pass() -> None:
    assert validate_spec({}) == []
    assert validate_spec({
        "podSelector": {"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [None, {}, {"from": [], "ports": []}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/8", "except": ["10.1.0.0/16", "10.2.3.4/32"]}},
                           {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}],
                    "ports": [{"port": 80, "endPort": 90, "protocol": "SCTP"}, {"port": "dns", "protocol": "UDP"},
                              {"protocol": "UDP"}]}],
    }) == []


def test_check_spec_lists_every_error() -> None:
    with pytest.raises(PolicyValidationError) as ei:
        check_spec("x/bad", {"ingress": [{"ports": [{"port": 0}, {"protocol": "ICMP"}]}]})
    assert ei.value.errors == [
        "spec.ingress[0].ports[0].port: 0 is not in 1..65535",
        "spec.ingress[0].ports[1].protocol: 'ICMP' is not a supported protocol (TCP, UDP, SCTP)",
    ]
    assert str(ei.value).startswith("NetworkPolicy x/bad rejected: spec.ingress[0].ports[0].port")


def _state() -> ClusterState:
    s = ClusterState()
    s.namespaces["x"] = Namespace("x")
    s.pods["x/a"] = Pod("x", "a", {"app": "a"}, ip="10.0.0.1", ports=(ContainerPort(80, "TCP", "http"),))
    s.pods["x/b"] = Pod("x", "b", {"app": "b"}, ip="10.0.0.2")
    return s


DENY_A = {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": []}
BAD = {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}


def test_invalid_policy_is_rejected_and_others_keep_working(caplog: pytest.LogCaptureFixture) -> None:
    s = _state()
    s.policies["x/deny-a"] = NetworkPolicy("x", "deny-a", DENY_A)
    s.policies["x/bad"] = NetworkPolicy("x", "bad", BAD)
    eng = PolicyEngine()
    with caplog.at_level(logging.WARNING, logger="novanet.policy"):
        eng.load(s)
    assert eng.rejected == {"x/bad": ["spec.ingress[0].ports[0].endPort: 80 is less than port 90"]}
    assert "NetworkPolicy x/bad rejected: spec.ingress[0].ports[0].endPort" in caplog.text
    assert not eng.evaluate("x/b", "x/a", "TCP", 80).allowed  # deny-a still enforced
    assert eng.evaluate("x/a", "x/b", "TCP", 80).allowed  # bad never isolated x/b


def test_invalid_update_keeps_last_valid_version() -> None:
    s = _state()
    s.policies["x/deny-a"] = NetworkPolicy("x", "deny-a", DENY_A)
    eng = PolicyEngine()
    eng.load(s)
    assert eng.upsert_policy(NetworkPolicy("x", "deny-a", {**DENY_A, "ingress": [{"from": [{}]}]})) == {}
    assert eng.rejected["x/deny-a"] == ["spec.ingress[0].from[0]: must specify podSelector, namespaceSelector or ipBlock"]
    assert not eng.evaluate("x/b", "x/a", "TCP", 80).allowed
    # Fixing it clears the report; deleting removes both.
    eng.upsert_policy(NetworkPolicy("x", "deny-a", {**DENY_A, "ingress": [{}]}))
    assert eng.rejected == {}
    assert eng.evaluate("x/b", "x/a", "TCP", 80).allowed
    eng.delete_policy("x/deny-a")
    assert eng.endpoints["x/a"].ingress.isolated is False


def test_resolution_warnings_use_the_guide_wording(caplog: pytest.LogCaptureFixture) -> None:
    s = _state()
    s.policies["x/named"] = NetworkPolicy("x", "named", {
        "podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"ports": [{"port": "metrics"}]}]})
    s.policies["x/ns"] = NetworkPolicy("x", "ns", {
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"app": "web"}}}]}]})
    eng = PolicyEngine()
    with caplog.at_level(logging.WARNING, logger="novanet.policy"):
        eng.load(s)
    assert (
        "failed to list pods for named port resolution port=metrics namespace=x error=no pod selected by x/named "
        "ingress[0] declares a TCP container port named metrics" in caplog.text
    )
    assert (
        "failed to list namespaces for policy resolution selector=app=web error=no namespace matches "
        "(policy x/ns spec.ingress[0].from[0])" in caplog.text
    )
    assert set(eng.warnings()) == {"x/named", "x/ns"}
    # Logged once, not on every recompile; cleared once the selector resolves.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="novanet.policy"):
        eng.upsert_pod(Pod("x", "c", {"app": "c"}, ip="10.0.0.3"))
        assert "failed to list" not in caplog.text
        eng.upsert_namespace(Namespace("y", {"app": "web"}))
    assert set(eng.warnings()) == {"x/named"}
