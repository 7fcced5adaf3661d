"""The tunnel's underlay next hops looked up in one iproute2 batch agree with the one-request-each
netlink lookup, in a throwaway netns: on-link, via a gateway, unreachable, and the node itself."""

from __future__ import annotations

import uuid

import pytest
from pyroute2 import IPRoute

from novanet_core.bpf.tunnel import routes
from novanet_core.netns import in_netns
from tests.support.node import sh

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture
def netns():
    name = f"nvt-nh{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        sh("ip", "-n", name, "addr", "add", "192.0.2.2/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def test_batched_nexthops_match_one_lookup_each(netns: str) -> None:
    ips = ["192.0.2.7", "198.51.100.9", "198.51.100.10", "203.0.113.5", "192.0.2.2", "192.0.2.7"]
    with in_netns(netns):
        got = routes.nexthops(ips)
        with IPRoute() as ipr:
            want = {ip: routes.nexthop(ipr, ip) for ip in ips}
    assert got == want
    assert got["198.51.100.9"] == "192.0.2.1" and got["192.0.2.7"] == "192.0.2.7"
    assert got["203.0.113.5"] == "203.0.113.5"  # no route: the address itself
