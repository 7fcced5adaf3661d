"""A three-node lab per tunnel protocol, shared by the tests of a module (lab up takes ~5 s) and
always taken down. Pods: x/a and y/a on node-1, x/b on node-2, x/c on node-3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.lab import LabUnderTest

PORTS = [{"name": "serve-80-tcp", "port": 80, "protocol": "TCP"}, {"name": "serve-80-udp", "port": 80, "protocol": "UDP"}]
PLACEMENT = {"x/a": "node-1", "y/a": "node-1", "x/b": "node-2", "x/c": "node-3"}


def spec(protocol: str, underlay_mtu: int = 1500) -> dict[str, Any]:
    return {
        "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": protocol,
                    "datapath": "ebpf", "policy": {"defaultDeny": False}},
        "underlay": {"cidr": "172.30.0.0/24", "mtu": underlay_mtu},
        "nodes": [{"name": "node-1"}, {"name": "node-2"}, {"name": "node-3", "podCIDR": "10.42.100.0/24"}],
        "namespaces": [{"name": "x", "labels": {"ns": "x"}}, {"name": "y", "labels": {"ns": "y"}}],
        "pods": [{"name": p.split("/")[1], "namespace": p.split("/")[0], "node": n, "labels": {"pod": p.split("/")[1]},
                  "ports": PORTS} for p, n in PLACEMENT.items()],
    }


@pytest.fixture(scope="module", params=["vxlan", "geneve"])
def olab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(spec(request.param), tmp_path_factory.mktemp(f"overlay-{request.param}"))
    lab.protocol = request.param  # type: ignore[attr-defined]
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
