"""PodCIDR carving and underlay addresses (no root needed)."""

from __future__ import annotations

import pytest
from novanet_lab.addressing import AddressError, assign_node_ips, carve_pod_cidrs, underlay_gateway


def test_carves_in_order() -> None:
    got = carve_pod_cidrs("10.42.0.0/16", 24, [("a", None), ("b", None), ("c", None)])
    assert got == {"a": "10.42.0.0/24", "b": "10.42.1.0/24", "c": "10.42.2.0/24"}


def test_explicit_cidrs_are_reserved_first() -> None:
    got = carve_pod_cidrs("10.42.0.0/16", 24, [("a", None), ("b", "10.42.0.0/24"), ("c", None)])
    assert got == {"a": "10.42.1.0/24", "b": "10.42.0.0/24", "c": "10.42.2.0/24"}


def test_carving_skips_blocks_overlapping_a_larger_explicit_range() -> None:
    got = carve_pod_cidrs("10.42.0.0/16", 24, [("a", "10.42.0.0/23"), ("b", None)])
    assert got["b"] == "10.42.2.0/24"


def test_other_mask_size() -> None:
    got = carve_pod_cidrs("10.42.0.0/24", 26, [("a", None), ("b", None)])
    assert got == {"a": "10.42.0.0/26", "b": "10.42.0.64/26"}


@pytest.mark.parametrize(
    ("cluster", "mask", "nodes", "msg"),
    [
        ("10.42.0.0/24", 25, [("a", None), ("b", None), ("c", None)], "nodes[2].podCIDR: cluster.clusterCIDR 10.42.0.0/24 has no free /25"),
        ("10.42.0.0/16", 24, [("a", "10.42.0.0/24"), ("b", "10.42.0.128/25")], "nodes[1].podCIDR: 10.42.0.128/25 overlaps nodes[0].podCIDR"),
        ("10.42.0.0/16", 24, [("a", "10.43.0.0/24")], "nodes[0].podCIDR: 10.43.0.0/24 is not inside"),
        ("10.42.0.0/24", 16, [("a", None)], "cluster.nodeCIDRMaskSize"),
    ],
)
def test_carving_errors(cluster: str, mask: int, nodes: list[tuple[str, str | None]], msg: str) -> None:
    with pytest.raises(AddressError, match=msg.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        carve_pod_cidrs(cluster, mask, nodes)


def test_node_ips_skip_the_bridge_and_explicit_ones() -> None:
    assert underlay_gateway("172.30.0.0/24") == "172.30.0.1"
    got = assign_node_ips("172.30.0.0/24", [("a", None), ("b", "172.30.0.2"), ("c", None)])
    assert got == {"a": "172.30.0.3", "b": "172.30.0.2", "c": "172.30.0.4"}


@pytest.mark.parametrize(
    ("nodes", "msg"),
    [
        ([("a", "172.30.0.1")], "nodes[0].ip: 172.30.0.1 is the underlay bridge"),
        ([("a", "172.30.1.5")], "nodes[0].ip: 172.30.1.5 is not a host address"),
        ([("a", "172.30.0.9"), ("b", "172.30.0.9")], "nodes[1].ip: 172.30.0.9 is already used by nodes[0]"),
    ],
)
def test_node_ip_errors(nodes: list[tuple[str, str | None]], msg: str) -> None:
    with pytest.raises(AddressError) as e:
        assign_node_ips("172.30.0.0/24", nodes)
    assert msg in str(e.value)


def test_underlay_too_small_for_nodes() -> None:
    with pytest.raises(AddressError, match="no free address left"):
        assign_node_ips("172.30.0.0/30", [("a", None), ("b", None)])
