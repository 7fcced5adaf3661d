"""Hand-written examples of the semantics docs/policy.md promises (the properties cover the rest)."""

from __future__ import annotations

from novanet_core.policy import CidrPeer, IdentityPeer, PolicyEngine, PortRange
from novanet_core.state.model import ClusterState, ContainerPort, Namespace, NetworkPolicy, Pod

HTTP80 = (ContainerPort(80, "TCP", "http"),)
HTTP8080 = (ContainerPort(8080, "TCP", "http"),)


def world(*policies: tuple[str, str, dict]) -> ClusterState:
    s = ClusterState()
    for n in ("app", "kube-system"):
        s.namespaces[n] = Namespace(n)
    s.pods["app/web-1"] = Pod("app", "web-1", {"app": "web"}, node="n1", ip="10.0.0.1", ports=HTTP80)
    s.pods["app/web-2"] = Pod("app", "web-2", {"app": "web"}, node="n2", ip="10.0.0.2", ports=HTTP8080)
    s.pods["app/cli"] = Pod("app", "cli", {"app": "cli"}, node="n1", ip="10.0.0.3")
    s.pods["kube-system/dns"] = Pod("kube-system", "dns", {"k8s-app": "kube-dns"}, node="n2", ip="10.0.0.53",
                                    ports=(ContainerPort(53, "UDP", "dns"),))
    for ns, name, spec in policies:
        s.policies[f"{ns}/{name}"] = NetworkPolicy(ns, name, spec)
    return s


ALLOW_DNS = ("app", "allow-dns", {  # the guide's example, verbatim in substance
    "podSelector": {}, "policyTypes": ["Egress"],
    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                "ports": [{"protocol": "UDP", "port": 53}]}]})


def test_default_deny_needs_one_explicit_allow_and_no_side_denying() -> None:
    eng = PolicyEngine(default_deny=True)
    eng.load(world(ALLOW_DNS))
    # The guide's allow-dns egress policy alone is enough for DNS: kube-system's ingress is not
    # selected by any policy, so it admits what the client's egress policy explicitly allows.
    v = eng.evaluate("app/cli", "kube-system/dns", "UDP", 53)
    assert v.allowed, v.reason
    assert "ingress of kube-system/dns allowed by app/allow-dns" in v.reason
    # Everything nobody allowed is denied, in both directions and to/from the outside.
    assert not eng.evaluate("app/cli", "kube-system/dns", "TCP", 53).allowed
    assert not eng.evaluate("kube-system/dns", "app/cli", "UDP", 53).allowed
    assert not eng.evaluate("app/cli", "app/web-1", "TCP", 80).allowed
    d = eng.evaluate("192.168.1.1", "app/web-1", "TCP", 80)
    assert not d.allowed and d.reason == "denied: ingress of app/web-1 isolated by defaultDeny: no policy allowed it"
    assert not eng.evaluate("app/cli", "8.8.8.8", "UDP", 53).allowed
    # Without defaultDeny, the same policy only restricts app pods' egress.
    eng = PolicyEngine()
    eng.load(world(ALLOW_DNS))
    assert eng.evaluate("kube-system/dns", "app/cli", "UDP", 53).allowed
    assert not eng.evaluate("app/cli", "8.8.8.8", "UDP", 53).allowed


def test_default_deny_selected_side_still_decides() -> None:
    deny_dns_ingress = ("kube-system", "deny", {"podSelector": {}, "ingress": []})
    eng = PolicyEngine(default_deny=True)
    eng.load(world(ALLOW_DNS, deny_dns_ingress))
    v = eng.evaluate("app/cli", "kube-system/dns", "UDP", 53)
    assert not v.allowed
    assert v.reason == "denied: ingress of kube-system/dns isolated by kube-system/deny: no policy allowed it"


def test_named_port_resolves_per_destination_pod() -> None:
    pol = ("app", "to-web-http", {"podSelector": {"matchLabels": {"app": "cli"}}, "policyTypes": ["Egress"],
                                  "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                              "ports": [{"port": "http"}]}]})
    eng = PolicyEngine()
    eng.load(world(pol))
    assert eng.evaluate("app/cli", "app/web-1", "TCP", 80).allowed
    assert not eng.evaluate("app/cli", "app/web-1", "TCP", 8080).allowed
    assert eng.evaluate("app/cli", "app/web-2", "TCP", 8080).allowed
    assert not eng.evaluate("app/cli", "app/web-2", "TCP", 80).allowed
    # web-1 and web-2 share an identity but not the port number: addressed by /32 instead.
    rules = eng.endpoints["app/cli"].egress.rules
    assert {(r.peer, r.ports) for r in rules} == {
        (CidrPeer("10.0.0.1/32"), (PortRange("TCP", 80, 80),)),
        (CidrPeer("10.0.0.2/32"), (PortRange("TCP", 8080, 8080),)),
    }


def test_named_port_ingress_resolves_on_the_selected_pod() -> None:
    pol = ("app", "web-http", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]})
    eng = PolicyEngine()
    eng.load(world(pol))
    assert eng.endpoints["app/web-1"].ingress.rules[0].ports == (PortRange("TCP", 80, 80),)
    assert eng.endpoints["app/web-2"].ingress.rules[0].ports == (PortRange("TCP", 8080, 8080),)


def test_policy_types_default_follows_the_apiserver() -> None:
    # policyTypes omitted: Ingress, plus Egress only when there is at least one egress rule.
    eng = PolicyEngine()
    eng.load(world(("app", "p", {"podSelector": {"matchLabels": {"app": "cli"}}, "egress": []})))
    ep = eng.endpoints["app/cli"]
    assert ep.ingress.isolated and not ep.egress.isolated
    eng.load(world(("app", "p", {"podSelector": {"matchLabels": {"app": "cli"}}, "egress": [{}]})))
    ep = eng.endpoints["app/cli"]
    assert ep.ingress.isolated and ep.egress.isolated and ep.egress.rules[0].ports is None


def test_ip_block_except_at_any_prefix_and_ingress_from_outside() -> None:
    pol = ("app", "from-outside", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/25", "192.168.2.7/32"]}}],
         "ports": [{"port": 80, "endPort": 90}]}]})
    eng = PolicyEngine()
    eng.load(world(pol))
    assert eng.evaluate("192.168.1.200", "app/web-1", "TCP", 85).allowed
    assert not eng.evaluate("192.168.1.100", "app/web-1", "TCP", 85).allowed
    assert not eng.evaluate("192.168.2.7", "app/web-1", "TCP", 85).allowed
    assert not eng.evaluate("192.168.2.8", "app/web-1", "TCP", 91).allowed
    assert not eng.evaluate("192.168.2.8", "app/web-1", "UDP", 85).allowed


def test_node_filter_and_deltas() -> None:
    eng = PolicyEngine(node="n1")
    eps = eng.load(world())
    assert set(eps) == {"app/web-1", "app/cli"}
    delta = eng.upsert_policy(NetworkPolicy("app", "deny", {"podSelector": {"matchLabels": {"app": "web"}},
                                                            "ingress": []}))
    assert set(delta) == {"app/web-1"} and delta["app/web-1"].ingress.isolated
    # A relabel that changes nothing for the local endpoints yields an empty delta.
    assert eng.upsert_pod(Pod("kube-system", "dns", {"k8s-app": "kube-dns", "v": "2"}, node="n2",
                              ip="10.0.0.53")) == {}
    assert eng.delete_pod("app/web-1") == {"app/web-1": None}


def test_identity_peers_use_the_pod_identity() -> None:
    pol = ("app", "from-cli", {"podSelector": {"matchLabels": {"app": "web"}},
                               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]}]})
    eng = PolicyEngine()
    eng.load(world(pol))
    rule = eng.endpoints["app/web-1"].ingress.rules[0]
    assert rule.peer == IdentityPeer(frozenset({eng.identity_of("app/cli")}))
    assert rule.describe().endswith("any port (app/from-cli ingress[0])")
    assert eng.rules()[0][:2] == ("app/web-1", "ingress")
