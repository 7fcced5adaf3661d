"""The eBPF datapath in the lab: traffic flows only through our programs, and survives restarts
of the agent and the dataplane and a program swap with zero loss."""

from __future__ import annotations

import contextlib
import os
import re
import signal

import pytest
from novanet_lab import agents

from novanet_core.api.client import ApiClient
from novanet_core.bpf import syscall
from tests.support.lab import LabUnderTest
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

PORTS = [{"name": "tcp", "port": 80, "protocol": "TCP"}, {"name": "udp", "port": 80, "protocol": "UDP"}]
SPEC = {
    "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan", "datapath": "ebpf"},
    "nodes": [{"name": "node-1"}],
    "namespaces": [{"name": "x", "labels": {"ns": "x"}}],
    "pods": [{"name": n, "namespace": "x", "labels": {"pod": n}, "ports": PORTS} for n in ("a", "b", "c")],
}


@pytest.fixture
def lab(tmp_path):
    lab = LabUnderTest(SPEC, tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _all_allowed(results):
    return [r for r in results if not r["allowed"]]


@contextlib.contextmanager
def _agent_frozen(lab):
    """SIGSTOP the node agent for the block. The agent heals the datapath on every dataplane
    resync (routes re-added, programs re-attached), which is right in production but would undo
    this test's deliberate damage at a random moment; frozen, it also shows the pinned programs
    carry traffic with no control plane running."""
    pid = agents.running_pid(lab.paths, "node-1", "agent")
    assert pid is not None, "the lab's agent is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_pod_traffic_needs_only_our_programs(lab):
    eps = {e["pod"]: e for e in lab.ctl("endpoints")}
    b = lab.pod_ip("x/b")
    with _agent_frozen(lab):
        _traffic_without_routes_then_detached(lab, eps, b)


def _traffic_without_routes_then_detached(lab, eps, b):
    node = lab.node_netns()
    lab.run_in(node, "sysctl", "-qw", "net.ipv4.ip_forward=0", check=True)
    # Remove every per-pod kernel route: the datapath's redirects are then the only path.
    routes = lab.run_in(node, "ip", "-o", "route", "show").stdout
    for line in routes.splitlines():
        dst = line.split()[0]
        if dst.startswith("10.42.0.") and "/" not in dst:
            lab.run_in(node, "ip", "route", "del", dst, check=True)
    assert "10.42.0." not in lab.run_in(node, "ip", "route", "show").stdout
    results = lab.probe()
    assert results and _all_allowed(results) == []
    assert lab.run_in(lab.pod_netns("x/a"), "ping", "-c", "2", "-W", "1", b).returncode == 0

    # Detach our programs from b's host veth: with forwarding off and no routes, b is cut off.
    root = lab.paths.node_bpf_root("node-1")
    for direction in ("ingress", "egress"):
        fd = syscall.obj_get(str(root / "links" / f"{eps['b']['host_ifname']}_{direction}"))
        try:
            syscall.link_detach(fd)
        finally:
            os.close(fd)
    results = lab.probe("--to", "x/b")
    assert [r for r in results if r["allowed"] and r["from"] != "x/b"] == []
    assert lab.run_in(lab.pod_netns("x/a"), "ping", "-c", "1", "-W", "1", b).returncode != 0
    # Still fine between the pods whose programs are attached.
    assert _all_allowed(lab.probe("--from", "x/a", "--to", "x/c")) == []


@pytest.mark.long  # the short forms: tests/bpf/test_restart.py (kills and a swap under ping, one node)
def test_zero_loss_across_agent_and_dataplane_kills_and_a_program_swap(lab):
    b = lab.pod_ip("x/b")
    before = [(e["ip"], e["identity"], e["host_ifname"], e["mac"]) for e in lab.ctl("endpoints")]
    server = lab.in_pod("x/b", "iperf3", "-s", "-1")
    lab.wait_listening("x/b", 5201)
    watch = PingWatch(lambda *argv: lab.in_pod("x/a", *argv), b, interval=0.01)
    stream = lab.in_pod("x/a", "iperf3", "-c", b, "-t", "60", "-i", "1", "-b", "200M", "--forceflush")
    try:
        watch.wait_replies(50)
        first = watch.mark()
        for _ in range(5):
            lab.cli("lab", "restart", "--daemon", "agent", "--kill")
        for _ in range(5):
            lab.cli("lab", "restart", "--daemon", "dataplane", "--kill")
        with ApiClient(str(lab.paths.socket("node-1", "dataplane")), timeout=120) as c:
            swapped = c.call("ebpf.reload")
        assert swapped, "the program swap reported nothing"
        last = watch.mark(ahead=100)  # a second of traffic past the end of the disruption
        watch.wait_replied(last)
    finally:
        watch.stop()
        stream.send_signal(signal.SIGINT)
        stream_out, stream_err = stream.communicate(timeout=20)
        server.kill()
        server.wait()
    lost = watch.lost(last)
    print(f"ping every 10 ms: requests 1..{last} ({last - first} of them during 5 agent + 5 dataplane SIGKILLs "
          f"and a swap), {len(lost)} lost")
    assert last - first > 100 and lost == [], lost[:20]
    # The TCP stream never stalled: every 1-second interval moved data.
    intervals = stream_out.split("- - - -")[0]  # per-second lines only, not the summary
    rates = [float(x) for x in re.findall(r"sec\s+[\d.]+ \w?Bytes\s+([\d.]+) \w?bits/sec", intervals)]
    assert len(rates) >= 5 and min(rates) > 0, stream_out + stream_err
    after = [(e["ip"], e["identity"], e["host_ifname"], e["mac"]) for e in lab.ctl("endpoints")]
    assert after == before
