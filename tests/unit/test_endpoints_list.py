"""``endpoints.list`` (novanetctl endpoints): dual-stack pods and the address order."""

from __future__ import annotations

import types
from typing import Any

from novanet_core.agent.api_methods import _endpoints
from novanet_core.types import Endpoint


def _ep(pod: str, ips: list[str], identity: int) -> Endpoint:
    return Endpoint(
        container_id=pod * 8,
        ifname="eth0",
        namespace="default",
        pod=pod,
        netns="/run/netns/x",
        ip=ips[0],
        mac="",
        host_ifname=f"nv{pod}",
        host_ifindex=0,
        host_mac="",
        gateway="",
        mtu=1500,
        identity=identity,
        ips=ips,
    )


def _agent(records: list[Endpoint], live: list[dict[str, Any]]) -> Any:
    return types.SimpleNamespace(
        store=types.SimpleNamespace(all=lambda: records),
        dataplane=types.SimpleNamespace(call=lambda method: live),
    )


def test_dual_stack_pod_is_listed_per_address_ipv4_first_numerically() -> None:
    a = _ep("a", ["10.42.0.10", "fd00:42::10"], 1000)
    b = _ep("b", ["10.42.0.9", "fd00:42::9"], 1001)
    live = [{"ip": ip, "identity": e.identity} for e in (a, b) for ip in e.ips]
    live.reverse()
    rows = _endpoints(_agent([a, b], live), {})
    assert [(r["ip"], r["pod"], r["inAgent"]) for r in rows] == [
        ("10.42.0.9", "b", True),
        ("10.42.0.10", "a", True),
        ("fd00:42::9", "b", True),
        ("fd00:42::10", "a", True),
    ]


def test_an_address_the_datapath_lacks_is_reported_for_that_address_only() -> None:
    a = _ep("a", ["10.42.0.10", "fd00:42::10"], 1000)
    rows = _endpoints(_agent([a], [{"ip": "10.42.0.10", "identity": 1000}]), {})
    assert [(r["ip"], r.get("inDatapath", True)) for r in rows] == [
        ("10.42.0.10", True),
        ("fd00:42::10", False),
    ]
    assert rows[1]["pod"] == "a" and rows[1]["identity"] == 1000
