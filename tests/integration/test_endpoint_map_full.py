"""The endpoints map at capacity: a pod ADD fails with a clear CNI error (103, the datapath
refused) and leaves nothing behind (no veth, no address, no endpoint record, no interface in the
pod), pods that were there keep working, and ADD works again once there is room.

The map is filled from outside with entries for addresses no pod uses (as many remote pods
would), written straight into the pinned map."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novanet_core.bpf import pinned, syscall
from novanet_core.bpf.layouts import ENDPOINTS, EndpointKey, EndpointValue
from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

FILLER_BASE = (198 << 24) | (18 << 16)  # 198.18.0.0/15 (benchmarking range): never a pod here


@pytest.fixture
def node() -> Iterator[NodeUnderTest]:
    n = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.16.0/24")
    try:
        n.start(wait=120)
        yield n
    finally:
        n.close()


def _fill(fd: int) -> list[bytes]:
    keys, value = [], bytes(EndpointValue(identity=2, node_ip=(172 << 24) | 1))
    i = 0
    while True:
        k = bytes(EndpointKey(ip=FILLER_BASE + i))
        try:
            syscall.map_update(fd, k, value)
        except OSError:
            return keys  # E2BIG: full
        keys.append(k)
        i += 1


def test_add_into_a_full_endpoints_map_fails_cleanly_and_recovers(node: NodeUnderTest) -> None:
    first = node.add_pod_netns()
    rc, out = node.cni("ADD", f"epfull0{node.id}", first)
    assert rc == 0, out
    # After the agent's first full push (which, like any reconcile, removes map entries it did
    # not ask for, as the filler below is).
    deadline = time.monotonic() + 30
    while node.call("status")["dataplaneResyncs"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ipam_dir = Path(node.config["ipam"]["dataDir"])
    before = {p.name for p in ipam_dir.iterdir()}
    fd = syscall.obj_get(pinned.versioned_path(node.config["bpf"]["root"], ENDPOINTS.spec))
    filler: list[bytes] = []
    try:
        filler = _fill(fd)
        assert len(filler) + 1 == ENDPOINTS.spec.max_entries
        ns = node.add_pod_netns()
        cid = f"epfull1{node.id}"
        rc, err = node.cni("ADD", cid, ns)
        assert rc == 1 and err["code"] == 103, err
        assert "endpoint" in err["msg"]
        assert {p.name for p in ipam_dir.iterdir()} == before  # the address went back
        # The agent's record, not endpoints.list: that one reads 65 536 map entries back.
        assert not list((node.run / "state" / "endpoints").glob(f"{cid}_*"))
        links = json.loads(sh("ip", "-n", node.ns, "-j", "link", "show").stdout)
        assert not any(link["ifname"] == f"nv{cid[:11]}" for link in links)
        assert [x["ifname"] for x in json.loads(sh("nsenter", f"--net={ns}", "ip", "-j", "link", "show").stdout)] \
            == ["lo"]
        assert node.call("status")["ready"]
        assert node.cni("CHECK", f"epfull0{node.id}", first, conf={"prevResult": out})[0] == 0  # the old pod is fine
    finally:
        for k in filler:
            syscall.map_delete(fd, k)
        os.close(fd)
    rc, out2 = node.cni("ADD", cid, ns)
    assert rc == 0, out2
