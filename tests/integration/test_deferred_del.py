"""A DEL deferred while the agent is not listening is carried out by the running agent, not only
at its next start.

The CNI client leaves a tombstone (``<run dir>/pending-del``) when the agent's CNI socket does
not answer. A restarted agent processes tombstones early in its start-up and only then starts
listening; a DEL that arrived in between (in native mode the start-up also configures FRR, so the
gap is seconds) left its tombstone until the agent's *next* restart: the native-mode chaos soak
found two such pods on one node, their endpoints, IPAM addresses and tcx link pins leaked.

What a DEL meets in that gap is reproduced exactly by moving the agent's CNI socket aside: the
client cannot connect, so it defers, while the agent keeps running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


@pytest.fixture
def node() -> Iterator[NodeUnderTest]:
    n = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.18.0/24")
    try:
        n.start(wait=120)
        yield n
    finally:
        n.close()


def _link_pins(node: NodeUnderTest, host_ifname: str) -> list[str]:
    d = Path(node.config["bpf"]["root"]) / "links"
    return sorted(p.name for p in d.iterdir() if p.name.startswith(host_ifname)) if d.is_dir() else []


def test_del_deferred_after_start_up_is_finished_without_a_restart(node) -> None:
    cid = "rel18deferred" + "0" * 51
    rc, out = node.cni("ADD", cid, node.add_pod_netns())
    assert rc == 0, out
    ip = out["ips"][0]["address"].split("/")[0]
    host = out["interfaces"][0]["name"]
    assert _link_pins(node, host), "the ebpf datapath pins a tcx link per pod veth"
    sock = Path(node.config["sockets"]["cni"])
    aside = sock.with_name(sock.name + ".rel18-aside")
    tomb = sock.parent / "pending-del" / f"{cid}_eth0.json"
    sock.rename(aside)
    try:
        assert node.cni("DEL", cid) == (0, None)  # deferred: the runtime moves on
    finally:
        aside.rename(sock)
    assert json.loads(tomb.read_text())["containerID"] == cid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        eps = {e["containerID"] for e in node.call("endpoints.list")}
        ips = {a["address"] for a in node.call("ipam.list")}
        if cid not in eps and ip not in ips and not tomb.exists() and not _link_pins(node, host):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"deferred DEL not carried out by the running agent: endpoint {cid in eps}, "
                    f"IPAM {ip in ips}, tombstone {tomb.exists()}, link pins {_link_pins(node, host)}")

