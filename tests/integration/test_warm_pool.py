"""The warm pool of host veths (warmPool): ADDs take prepared members and never one that went bad,
and nothing leaks when the agent is killed with members half-made or half-used."""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest

from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

SIZE = 3


def _links(node: NodeUnderTest) -> dict[str, str]:
    """Interface name -> its peer's name in the node netns ("" when the peer is elsewhere)."""
    out = {}
    for line in sh("ip", "-n", node.ns, "-o", "link", "show", "type", "veth").stdout.splitlines():
        name = line.split(":")[1].strip()
        own, _, peer = name.partition("@")
        out[own] = peer if not peer.startswith("if") else ""
    return out


def _members(node: NodeUnderTest) -> set[str]:
    return {n for n in _links(node) if n.startswith("nvwarm")}


def _ifindex(node: NodeUnderTest, name: str) -> int:
    return int(sh("ip", "-n", node.ns, "-o", "link", "show", "dev", name).stdout.split(":")[0])


def _pins(node: NodeUnderTest) -> set[str]:
    return set(os.listdir(os.path.join(node.config["bpf"]["root"], "links")))


def _wait(cond, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def pool_node():
    n = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.9.0/24",
                      extra={"warmPool": {"size": SIZE, "refillIdleMs": 0}})
    try:
        n.start(120)
        yield n
    finally:
        n.close()


def _ready(node: NodeUnderTest) -> int:
    return node.call("status")["warmPool"]["ready"]


def _up(node: NodeUnderTest, name: str) -> bool:
    link = json.loads(sh("ip", "-n", node.ns, "-j", "link", "show", "dev", name).stdout)[0]
    return "UP" in link["flags"]


def _listed(node: NodeUnderTest) -> set[str]:
    """The interfaces the agent says are its pool's."""
    return {n for m in node.call("status")["warmPool"]["members"] for n in (m["host"], m["peer"])}


def _pool_veths(node: NodeUnderTest) -> set[str]:
    return {n for n in _links(node) if n.startswith(("nvwarm", "nvwpeer"))}


def test_add_takes_an_attached_member_and_del_removes_it(pool_node):
    _wait(lambda: _ready(pool_node) == SIZE)
    members = _members(pool_node)
    assert len(members) == SIZE
    # attached ahead: a member counts as ready when its pair is up, and its programs may follow a
    # moment later (the dataplane attaches them), so wait for the pins rather than expect them
    want = {f"{m}_{d}" for m in members for d in ("ingress", "egress")}
    assert _wait(lambda: want <= _pins(pool_node)), want - _pins(pool_node)
    member_index = {_ifindex(pool_node, m) for m in members}
    a, b = pool_node.add_pod_netns(), pool_node.add_pod_netns()
    rc, ra = pool_node.cni("ADD", "poolpodA0001", a)
    assert rc == 0, pool_node.last_stderr
    assert pool_node.cni("ADD", "poolpodB0002", b)[0] == 0
    st = pool_node.call("status")["warmPool"]
    assert st["taken"] == 2 and st["missed"] == 0
    links = _links(pool_node)
    assert {"nvpoolpodA000", "nvpoolpodB000"} <= set(links)  # the guide's names
    assert _ifindex(pool_node, "nvpoolpodA000") in member_index  # a pool member, renamed (refills may
    # have been taken by the second ADD: the pool hands out its newest member first)
    pins = _pins(pool_node)
    now = _members(pool_node)
    assert {p.rsplit("_", 1)[0] for p in pins if p.startswith("nvwarm")} <= now  # a used member's pins moved
    assert {f"nvpoolpod{x}000_{d}" for x in "AB" for d in ("ingress", "egress")} <= pins  # renamed with them
    ip_b = next(e["ip"] for e in pool_node.call("endpoints.list") if e["host_ifname"] == "nvpoolpodB000")
    assert sh("nsenter", f"--net={a}", "ping", "-c", "1", "-W", "2", ip_b, check=False).returncode == 0
    eth0 = sh("nsenter", f"--net={a}", "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert ra["ips"][0]["address"].split("/")[0] in eth0
    _wait(lambda: _ready(pool_node) == SIZE)  # refilled
    assert pool_node.cni("DEL", "poolpodA0001", a)[0] == 0
    assert "nvpoolpodA000" not in _links(pool_node)
    assert not {"nvpoolpodA000_ingress", "nvpoolpodA000_egress"} & _pins(pool_node)

    # Members that went bad behind the pool's back: every host end down (an ADD given one failed in
    # the datapath: "route ...: Network is down"), and the newest one deleted outright.
    members = sorted(_members(pool_node))
    for m in members:
        sh("ip", "-n", pool_node.ns, "link", "set", m, "down")
    newest = pool_node.call("status")["warmPool"]["members"][-1]["host"]
    sh("ip", "-n", pool_node.ns, "link", "del", newest)
    c = pool_node.add_pod_netns()
    rc, _ = pool_node.cni("ADD", "poolpodC0003", c)
    assert rc == 0, pool_node.last_stderr
    assert _up(pool_node, "nvpoolpodC000")
    st = pool_node.call("status")["warmPool"]
    assert st["discarded"] >= 1  # the deleted one, not handed out
    assert newest not in _listed(pool_node)
    ip_c = next(e["ip"] for e in pool_node.call("endpoints.list") if e["host_ifname"] == "nvpoolpodC000")
    assert sh("nsenter", f"--net={c}", "ping", "-c", "1", "-W", "2", ip_b, check=False).returncode == 0, ip_c


def test_sigkill_with_a_half_used_member_leaks_no_veth(pool_node):
    _wait(lambda: _ready(pool_node) == SIZE)
    victim = sorted(_members(pool_node))[0]
    peer = "nvwpeer" + victim[len("nvwarm"):]
    # What a kill -9 between "peer moved into the pod" and "host end renamed" leaves: a pool
    # host end whose peer is in a pod netns.
    pod = pool_node.add_pod_netns()
    sh("ip", "-n", pool_node.ns, "link", "set", peer, "netns", pod.rsplit("/", 1)[1])
    # What a kill -9 between creating a member and setting it up leaves: a whole pair, down.
    suffix = secrets.token_hex(4)
    sh("ip", "-n", pool_node.ns, "link", "add", f"nvwarm{suffix}", "type", "veth", "peer", "name", f"nvwpeer{suffix}")
    sh("ip", "-n", pool_node.ns, "link", "set", sorted(_members(pool_node) - {victim})[0], "down")
    pool_node.kill("agent")
    pool_node.restart("agent")
    pool_node.wait_ready(120)
    _wait(lambda: _ready(pool_node) == SIZE)
    members = _members(pool_node)
    assert victim not in members  # the broken one was deleted, not adopted
    assert len(members) == SIZE  # and nothing else leaked: exactly the pool
    assert all(_links(pool_node)[m].startswith("nvwpeer") for m in members)
    assert all(_up(pool_node, m) for m in members)  # adopted members are usable, the down ones too
    assert _pool_veths(pool_node) == _listed(pool_node)  # every pool veth on the node is one the agent owns
    assert not {p for p in _pins(pool_node) if p.startswith(victim)}  # the deleted one's pins went with it
