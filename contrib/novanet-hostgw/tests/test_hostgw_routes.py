"""The backend's kernel work in a network namespace of the test's own: a node whose underlay
interface ``u0`` has two on-link neighbours and a default gateway (a third node behind it)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from novanet_hostgw.backend import HostGwRouting

from novanet_core.backends import BackendContext
from novanet_core.config.models import NovaNetConfig
from novanet_core.netns import in_netns
from novanet_core.types import NodeInfo, Underlay

pytestmark = [pytest.mark.root, pytest.mark.netns]

LOCAL = NodeInfo("n1", "172.31.251.1", "10.42.1.0/24")
N2 = NodeInfo("n2", "172.31.251.2", "10.42.2.0/24")
N3 = NodeInfo("n3", "172.31.251.3", "10.42.3.0/24")
FAR = NodeInfo("far", "10.77.0.9", "10.42.9.0/24")  # reached through the gateway: not on the segment
MTU = 1400


def sh(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def node() -> Iterator[tuple[str, HostGwRouting]]:
    ns, peer = f"hgw-{secrets.token_hex(3)}", f"hgw-{secrets.token_hex(3)}-p"
    try:
        for n in (ns, peer):
            subprocess.run(["ip", "netns", "add", n], check=True)
        sh(ns, "link", "add", "u0", "mtu", str(MTU), "type", "veth", "peer", "name", "p0", "netns", peer)
        sh(ns, "addr", "add", f"{LOCAL.ip}/24", "dev", "u0")
        sh(ns, "link", "set", "u0", "up")
        sh(peer, "link", "set", "p0", "up")
        sh(ns, "route", "add", "default", "via", "172.31.251.254")
        # a datapath's pod route (proto novanet, /32) that the backend must leave alone
        sh(ns, "route", "add", "10.42.1.5/32", "dev", "u0", "proto", "99")
        ifindex = json.loads(sh(ns, "-j", "link", "show", "u0"))[0]["ifindex"]
        ctx = BackendContext(config=NovaNetConfig(routingMode="native", routing={"type": "hostgw"}), component="agent",
                             node=LOCAL, underlay=Underlay("u0", ifindex, MTU))
        yield ns, HostGwRouting(ctx)
    finally:
        for n in (ns, peer):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def routes(ns: str) -> dict[str, tuple[str, str, int]]:
    out = json.loads(sh(ns, "-j", "-d", "route", "show", "proto", "99"))
    return {r["dst"]: (r.get("gateway", ""), r["dev"], r.get("metrics", [{}])[0].get("mtu", 0)) for r in out}


def test_remote_podcidrs_are_routed_via_on_link_nodes_only(node: tuple[str, HostGwRouting]) -> None:
    ns, b = node
    with in_netns(ns):
        b.start(LOCAL)
        b.sync_nodes(LOCAL, [N2, N3, FAR])
        st = b.status()
    assert routes(ns) == {"10.42.1.5": ("", "u0", 0), N2.pod_cidr: (N2.ip, "u0", MTU), N3.pod_cidr: (N3.ip, "u0", MTU)}
    assert st["routes"] == [{"node": "n2", "podCIDR": N2.pod_cidr, "via": N2.ip, "installed": True},
                            {"node": "n3", "podCIDR": N3.pod_cidr, "via": N3.ip, "installed": True}]
    (far,) = st["unreachable"]
    assert far["node"] == "far" and "via gateway 172.31.251.254" in far["reason"]
    assert st["connected"] is False and (st["underlay"], st["mtu"]) == ("u0", MTU)


def test_node_changes_follow_and_a_route_removed_behind_its_back_shows(node: tuple[str, HostGwRouting]) -> None:
    ns, b = node
    with in_netns(ns):
        b.start(LOCAL)
        b.sync_nodes(LOCAL, [N2, N3])
        assert b.status()["connected"] is True
        b.sync_nodes(LOCAL, [N3])
    assert set(routes(ns)) == {"10.42.1.5", N3.pod_cidr}
    sh(ns, "route", "del", N3.pod_cidr)
    with in_netns(ns):
        st = b.status()
    assert st["connected"] is False and st["routes"][0]["installed"] is False


def test_routes_stay_across_a_stop_unless_withdrawn(node: tuple[str, HostGwRouting]) -> None:
    ns, b = node
    with in_netns(ns):
        b.start(LOCAL)
        b.sync_nodes(LOCAL, [N2])
        b.stop(withdraw=False)
    assert N2.pod_cidr in routes(ns)
    with in_netns(ns):
        b.stop(withdraw=True)
    assert set(routes(ns)) == {"10.42.1.5"}
