"""Dual-stack and IPv6 lab specs: the agent config's forms for clusterCIDR and podCIDR, the underlay
family, per-family address plans, and every bad value refused with its field path (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from novanet_lab.addressing import (
    AddressError,
    assign_node_ips_by_family,
    carve_pod_cidrs_by_family,
    highest_free,
)
from novanet_lab.errors import LabError
from novanet_lab.manifests import node_object, pod_object
from novanet_lab.nodeconfig import node_config
from novanet_lab.paths import LabPaths
from novanet_lab.spec import load_spec, load_spec_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

DUAL = """
cluster: {clusterCIDR: "10.42.0.0/16,fd00:42::/48"}
underlay: {family: dual}
nodes: [{name: node-1}, {name: node-2}]
pods: [{name: a, ports: [{port: 80}]}]
"""


def error_of(text: str) -> str:
    with pytest.raises(LabError) as e:
        load_spec_text(text, "t.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    "name",
    [
        "lab-dual-stack-1node.yaml",
        "lab-dual-stack-3node.yaml",
        "lab-ipv6-3node.yaml",
        "lab-native-dual-stack.yaml",
        "lab-ipv6-native.yaml",
        "lab-ipv6-tunnel.yaml",
    ],
)
def test_examples_parse_and_make_valid_node_configs(name: str) -> None:
    spec = load_spec(EXAMPLES / name)
    assert 6 in spec.cluster.families
    plan = carve_pod_cidrs_by_family(
        spec.cluster.clusterCIDR, spec.cluster.masks(), [(n.name, n.podCIDR) for n in spec.nodes]
    )
    ips = assign_node_ips_by_family(spec.underlay.cidr or "", [(n.name, n.ip) for n in spec.nodes])
    for n in spec.nodes:
        cfg = node_config(spec, LabPaths(spec.name), n.name, ",".join(ips[n.name]), ",".join(plan[n.name]))
        assert cfg["clusterCIDR"] == spec.cluster.clusterCIDR


def test_both_forms_of_a_dual_stack_value_mean_the_same() -> None:
    a = load_spec_text(DUAL)
    b = load_spec_text(DUAL.replace('"10.42.0.0/16,fd00:42::/48"', '["10.42.0.0/16", "fd00:42::/48"]'))
    assert a.cluster.clusterCIDR == b.cluster.clusterCIDR == "10.42.0.0/16,fd00:42::/48"
    assert a.cluster.families == [4, 6]
    assert a.underlay.cidr == "172.30.0.0/24,fd00:172:30::/64"
    assert a.outside.address == "203.0.113.1,2001:db8:203::1"


def test_ipv4_lab_defaults_are_unchanged() -> None:
    spec = load_spec_text("nodes: [{name: n}]")
    assert spec.underlay.cidr == "172.30.0.0/24" and spec.outside.address == "203.0.113.1"
    assert "nodeCIDRMaskSizeIPv6" not in spec.cluster.model_dump(exclude_none=True)


def test_underlay_family_choice() -> None:
    assert load_spec_text("underlay: {family: IPv6}\nnodes: [{name: n}]").underlay.cidr == "fd00:172:30::/64"
    assert load_spec_text("underlay: {family: IPv4}\nnodes: [{name: n}]").underlay.cidr == "172.30.0.0/24"
    spec = load_spec_text("underlay: {cidr: 'fd00:9::/64,10.9.0.0/24'}\nnodes: [{name: n}]")
    assert spec.underlay.families == [6, 4]  # the first range is the nodes' primary address


def test_per_family_plans_keep_given_entries_and_carve_the_rest() -> None:
    plan = carve_pod_cidrs_by_family(
        "fd00:42::/48,10.42.0.0/16",
        {4: 24, 6: 64},
        [("a", None), ("b", "10.42.0.0/24"), ("c", "fd00:42::/64")],
    )
    assert plan == {
        "a": ["fd00:42:0:1::/64", "10.42.1.0/24"],
        "b": ["fd00:42:0:2::/64", "10.42.0.0/24"],
        "c": ["fd00:42::/64", "10.42.2.0/24"],
    }
    ips = assign_node_ips_by_family("172.30.0.0/24,fd00:172:30::/64", [("a", "fd00:172:30::9"), ("b", None)])
    assert ips == {"a": ["172.30.0.2", "fd00:172:30::9"], "b": ["172.30.0.3", "fd00:172:30::2"]}
    # IPv6 has no broadcast: the last address is the highest free one
    assert highest_free("fd00:172:30::/64", set()) == "fd00:172:30:0:ffff:ffff:ffff:ffff"
    assert highest_free("172.30.0.0/24", {"172.30.0.254"}) == "172.30.0.253"


def test_address_plan_errors() -> None:
    with pytest.raises(
        AddressError, match=r"nodes\[0\]\.podCIDR: fd00:1::/64 is IPv6 but cluster\.clusterCIDR"
    ):
        carve_pod_cidrs_by_family("10.42.0.0/16", {4: 24, 6: 64}, [("a", "fd00:1::/64")])
    with pytest.raises(AddressError, match=r"cluster\.nodeCIDRMaskSizeIPv6: /56 is larger"):
        carve_pod_cidrs_by_family("fd00:42::/64", {4: 24, 6: 56}, [("a", None)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DUAL.replace("fd00:42::/48", "fd00:43::/48,fd00:44::/48"), "cluster.clusterCIDR: 3 CIDRs given"),
        (
            DUAL.replace("10.42.0.0/16,fd00:42::/48", "fd00:42::/48,fd00:43::/48"),
            "cluster.clusterCIDR: fd00:42::/48 and fd00:43::/48 are both IPv6",
        ),
        (DUAL.replace("fd00:42::/48", "fd00:42::1/48"), "cluster.clusterCIDR: 'fd00:42::1/48' is not a CIDR"),
        (
            DUAL.replace("{name: node-1}", "{name: node-1, podCIDR: 'fd00:43::/64'}"),
            "nodes[0].podCIDR: fd00:43::/64 is not inside cluster.clusterCIDR fd00:42::/48",
        ),
        (
            DUAL.replace("{name: node-1}", "{name: node-1, podCIDR: 'fd00:42::/64,fd00:42:0:1::/64'}"),
            "nodes[0].podCIDR: fd00:42::/64 and fd00:42:0:1::/64 are both IPv6",
        ),
        (
            DUAL.replace("family: dual", "family: IPv4").replace(
                "{name: node-1}", "{name: node-1, ip: 'fd00:172:30::5'}"
            ),
            "nodes[0].ip: fd00:172:30::5 is IPv6 but underlay.cidr 172.30.0.0/24 has no IPv6 range",
        ),
        (
            DUAL.replace("family: dual", "family: IPv4, cidr: 'fd00:9::/64'"),
            "underlay: cidr fd00:9::/64 is not an IPv4 underlay",
        ),
        (
            DUAL.replace("family: dual", "family: IPv6}\noutside: {address: 203.0.113.1"),
            "outside.address: 203.0.113.1 is IPv4 but underlay.cidr fd00:172:30::/64 has no IPv4 range",
        ),
        (
            DUAL.replace("family: dual", "cidr: 'fd00:42:0:5::/64'"),
            "underlay.cidr: fd00:42:0:5::/64 overlaps cluster.clusterCIDR fd00:42::/48",
        ),
        (
            DUAL.replace("family: dual", "family: dual}\noutside: {address: 'fd00:42::99'"),
            "outside.address: fd00:42::99 is inside cluster.clusterCIDR fd00:42::/48",
        ),
        (
            DUAL.replace("family: dual", "family: dual}\noutside: {ip: 'fd00:9::1'"),
            "outside.ip: fd00:9::1 is not in underlay.cidr",
        ),
        (
            DUAL.replace("clusterCIDR:", "nodeCIDRMaskSizeIPv6: 130, clusterCIDR:"),
            "cluster.nodeCIDRMaskSizeIPv6",
        ),
        (
            DUAL.replace("clusterCIDR:", "serviceCIDR: 'fd00:96::/108,fd00:97::/108', clusterCIDR:"),
            "are both IPv6",
        ),
        (
            DUAL.replace("10.42.0.0/16,", "10.96.0.0/16,"),
            "cluster.serviceCIDR: 10.96.0.0/12 overlaps clusterCIDR 10.96.0.0/16",
        ),
    ],
)
def test_errors_name_the_field(text: str, expected: str) -> None:
    msg = error_of(text)
    assert expected in msg, msg
    assert "Traceback" not in msg


def test_a_combination_the_agent_refuses_is_its_error_with_the_field() -> None:
    """The agent config check runs at parse time through node_config; a combination only the
    agent's backends can judge (an IPv6 PodCIDR with the eBPF VXLAN programs) is refused by the
    agent at start, and lab up reports the agent's message (tests/lab/test_lab_dual_stack.py)."""
    spec = load_spec_text(DUAL.replace("clusterCIDR:", "mtu: 20, clusterCIDR:"))
    with pytest.raises(LabError) as e:
        node_config(spec, LabPaths("vlt"), "node-1", "172.30.0.2,fd00:172:30::2", "10.42.0.0/24,fd00:42::/64")
    assert "cluster.mtu: must be 'auto' or 576..9000" in str(e.value)


def test_manifests_carry_every_family() -> None:
    node = node_object("n", ["172.30.0.2", "fd00:172:30::2"], ["10.42.0.0/24", "fd00:42::/64"])
    assert node["spec"] == {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24", "fd00:42::/64"]}
    assert [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"] == [
        "172.30.0.2",
        "fd00:172:30::2",
    ]
    pod = pod_object(
        "x",
        "a",
        "n",
        {},
        [],
        "10.42.0.2",
        "172.30.0.2",
        True,
        ["10.42.0.2", "fd00:42::2"],
        ["172.30.0.2", "fd00:172:30::2"],
    )
    assert pod["status"]["podIPs"] == [{"ip": "10.42.0.2"}, {"ip": "fd00:42::2"}]
    assert pod["status"]["hostIPs"] == [{"ip": "172.30.0.2"}, {"ip": "fd00:172:30::2"}]
    v4 = pod_object("x", "a", "n", {}, [], "10.42.0.2", "172.30.0.2")
    assert v4["status"]["podIPs"] == [{"ip": "10.42.0.2"}] and "hostIPs" not in v4["status"]
