"""Agent restarts: pods keep their IPs, and a crash mid-ADD leaks nothing after reconcile."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.node import sh

pytestmark = [pytest.mark.root, pytest.mark.netns]


def _ips(node) -> set[str]:
    return {a["address"] for a in node.call("ipam.list")}


def _host_veths(node) -> set[str]:
    out = sh("ip", "-n", node.ns, "-o", "link", "show", "type", "veth").stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith("nv") and len(n) == 13}


def test_pods_keep_ips_and_connectivity_across_agent_sigkill(kernel_node):
    a, b = kernel_node.add_pod_netns(), kernel_node.add_pod_netns()
    assert kernel_node.cni("ADD", "keepa0000001", a)[0] == 0
    rc, rb = kernel_node.cni("ADD", "keepb0000002", b)
    assert rc == 0
    before = kernel_node.call("endpoints.list")
    for _ in range(3):
        kernel_node.restart("agent")
        kernel_node.wait_ready()
    after = kernel_node.call("endpoints.list")
    assert [(e["ip"], e["identity"], e["host_ifname"]) for e in before] == [
        (e["ip"], e["identity"], e["host_ifname"]) for e in after]
    ip_b = rb["ips"][0]["address"].split("/")[0]
    assert sh("nsenter", f"--net={a}", "ping", "-c", "1", "-W", "2", ip_b, check=False).returncode == 0


def test_reconcile_frees_ip_and_veth_left_by_a_crash_between_steps(kernel_node):
    # What a SIGKILL between "IP allocated" and "endpoint recorded" leaves behind, built exactly:
    ipam_dir = Path(kernel_node.config["ipam"]["dataDir"])
    (ipam_dir / "10.42.7.200").write_text("crashed00001\r\neth0")
    sh("ip", "-n", kernel_node.ns, "link", "add", "nvcrashed0001", "type", "veth", "peer", "name", "ntcrashed0001")
    kernel_node.restart("agent")
    kernel_node.wait_ready()
    assert "10.42.7.200" not in _ips(kernel_node)
    assert "nvcrashed0001" not in _host_veths(kernel_node)


def test_sigkill_during_concurrent_adds_leaks_nothing(kernel_node):
    netns = [kernel_node.add_pod_netns() for _ in range(12)]
    results: dict[int, int] = {}

    def add(i: int) -> None:
        results[i] = kernel_node.cni("ADD", f"{i:02d}storm00000", netns[i])[0]

    threads = [threading.Thread(target=add, args=(i,)) for i in range(len(netns))]
    ipam_dir = Path(kernel_node.config["ipam"]["dataDir"])
    for t in threads:
        t.start()
    # Kill as soon as the first address is allocated, so that the kill lands inside the storm
    # (a fixed sleep could land before any ADD reached the agent, or after all of them).
    deadline = time.monotonic() + 30
    while not any(f.name[0].isdigit() for f in ipam_dir.iterdir()):
        assert time.monotonic() < deadline, "no ADD allocated an address"
        time.sleep(0.002)
    kernel_node.kill("agent")
    for t in threads:
        t.join(60)
    kernel_node.restart("agent")
    kernel_node.wait_ready()
    eps = {e["ip"]: e for e in kernel_node.call("endpoints.list")}
    ips = _ips(kernel_node)
    # Every allocated address belongs to a live endpoint, and every pod veth to an endpoint.
    assert ips == set(eps)
    assert _host_veths(kernel_node) == {e["host_ifname"] for e in eps.values()}
    succeeded = [i for i, rc in results.items() if rc == 0]
    assert len(eps) >= len(succeeded)
    assert len(succeeded) < len(netns), "the kill interrupted no ADD: nothing was tested"
    # The runtime retries the failed ones (DEL then ADD, as kubelet does): all succeed now.
    for i, rc in results.items():
        if rc != 0:
            assert kernel_node.cni("DEL", f"{i:02d}storm00000", netns[i])[0] == 0
            assert kernel_node.cni("ADD", f"{i:02d}storm00000", netns[i])[0] == 0
    assert len(_ips(kernel_node)) == len(netns)
