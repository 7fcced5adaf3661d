"""The IPAM directory full or read-only: ADD fails with a clear CNI error and leaves no half-made
pod (no veth, no endpoint, no address file, no interface in the pod), and ADD works again once
the disk does. The directory is a small tmpfs this test mounts (and unmounts, even on failure)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture
def node() -> Iterator[NodeUnderTest]:
    n = NodeUnderTest(datapath="kernel", pod_cidr="10.42.15.0/24")
    ipam = Path(n.config["ipam"]["dataDir"])
    ipam.mkdir(parents=True)
    mounted = False
    try:
        sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", f"novanet-ipamtest-{n.id}", str(ipam))
        mounted = True
        n.start()
        yield n
    finally:
        try:
            n.kill("agent")
            n.kill("dataplane")
        finally:
            if mounted:
                sh("umount", "-l", str(ipam), check=False)
            n.close()


def _fill(d: Path) -> Path:
    filler = d / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return filler


def _nothing_left(n: NodeUnderTest, ns: str, cid: str, files_before: set[str]) -> None:
    assert {p.name for p in Path(n.config["ipam"]["dataDir"]).iterdir()} - {"filler.bin"} == files_before
    assert not any(e.get("containerID") == cid for e in n.call("endpoints.list"))
    links = json.loads(sh("ip", "-n", n.ns, "-j", "link", "show").stdout)
    assert not any(link["ifname"] == f"nv{cid[:11]}" for link in links)
    pod_links = json.loads(sh("nsenter", f"--net={ns}", "ip", "-j", "link", "show").stdout)
    assert [link["ifname"] for link in pod_links] == ["lo"]


def test_add_on_a_full_ipam_disk_fails_cleanly_and_recovers(node: NodeUnderTest) -> None:
    d = Path(node.config["ipam"]["dataDir"])
    ns = node.add_pod_netns()
    assert node.cni("ADD", f"full0{node.id}", ns)[0] == 0  # a pod from before the disk filled
    before = {p.name for p in d.iterdir()}
    filler = _fill(d)
    ns2 = node.add_pod_netns()
    rc, err = node.cni("ADD", f"full1{node.id}", ns2)
    assert rc == 1 and err["code"] == 105, err
    assert "ipam.dataDir" in err["msg"] and "No space left on device" in err["msg"]
    _nothing_left(node, ns2, f"full1{node.id}", before)
    filler.unlink()
    rc, out = node.cni("ADD", f"full1{node.id}", ns2)
    assert rc == 0, out
    assert node.cni("CHECK", f"full1{node.id}", ns2, conf={"prevResult": out})[0] == 0


def test_add_on_a_read_only_ipam_dir_fails_cleanly_and_recovers(node: NodeUnderTest) -> None:
    d = Path(node.config["ipam"]["dataDir"])
    ns = node.add_pod_netns()
    assert node.cni("ADD", f"ro0{node.id}", ns)[0] == 0
    before = {p.name for p in d.iterdir()}
    sh("mount", "-o", "remount,ro", str(d))
    try:
        ns2 = node.add_pod_netns()
        rc, err = node.cni("ADD", f"ro1{node.id}", ns2)
        assert rc == 1 and err["code"] == 105, err
        assert "ipam.dataDir" in err["msg"] and "Read-only file system" in err["msg"]
        _nothing_left(node, ns2, f"ro1{node.id}", before)
        assert node.call("status")["ready"]
    finally:
        sh("mount", "-o", "remount,rw", str(d))
    rc, out = node.cni("ADD", f"ro1{node.id}", ns2)
    assert rc == 0, out
    assert os.path.exists(d / out["ips"][0]["address"].split("/")[0])
