"""The shipped chain at work: a pod created with a bandwidth capability is held to it.

The lab's CNI invoker plays the runtime (libcni's capability args: the ``bandwidth`` entry goes to
the plugin that declares the capability, as ``runtimeConfig``), running the installed
``novanet-cni`` and the reference ``portmap`` and ``bandwidth`` plugins in the node's netns.
iperf3 measures what passes; a pod without the capability shows the limit is the plugin's doing.
With the eBPF datapath a limited pod's packets are forwarded by the node's stack (where the
plugin's qdiscs are), an unlimited pod's stay on the redirect path: the node's IPv4 forwarding
counter tells which, and a NetworkPolicy still holds for the limited pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from novanet_lab import cni as labcni

from tests.support.cni_clients import build_c_binary, install_cni
from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

RATE = 40_000_000  # bits/s
BURST = 400_000  # bits: 10 ms at RATE, small against a 3 s measurement


@pytest.fixture(params=["kernel", "ebpf"])
def chain(request, tmp_path):
    node = NodeUnderTest(datapath=request.param, pod_cidr="10.42.11.0/24")
    try:
        node.start(wait=120)  # a bound, not a delay: BCC compiles the datapath at start, slow under load
        build_c_binary()
        bin_dir, conf_dir = install_cni(node, tmp_path / "host")
        net = json.loads((conf_dir / "10-novanet.conflist").read_text())
        yield node, net, f"{bin_dir}{os.pathsep}/usr/lib/cni"
    finally:
        node.close()


def create(node: NodeUnderTest, net: dict, path: str, caps: dict | None) -> tuple[labcni.CniInvocation, str]:
    ns = Path(node.add_pod_netns()).name
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    inv = labcni.CniInvocation(node_netns=node.ns, pod_netns=ns, container_id=f"bw{uuid.uuid4().hex}",
                               namespace="default", pod=ns, capability_args=caps, path=path)
    return inv, labcni.pod_ip(labcni.add(inv, net))


def iperf(client_ns: str, server_ns: str, server_ip: str, reverse: bool) -> float:
    port = str(20000 + int(uuid.uuid4().hex[:3], 16))
    srv = subprocess.Popen(["nsenter", f"--net=/run/netns/{server_ns}", "iperf3", "-s", "-1", "-p", port],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while f":{port} " not in sh("nsenter", f"--net=/run/netns/{server_ns}", "ss", "-Hltn").stdout:
            assert time.monotonic() < deadline, "iperf3 server never listened"
            time.sleep(0.05)
        r = sh("nsenter", f"--net=/run/netns/{client_ns}", "iperf3", "-c", server_ip, "-p", port, "-t", "3", "-O", "1",
               "-J", *(["-R"] if reverse else []))
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait()


def forwarded(node: NodeUnderTest) -> int:
    """IPv4 packets the node's stack forwarded (Ip: ForwDatagrams)."""
    lines = [ln.split() for ln in sh("ip", "netns", "exec", node.ns, "cat", "/proc/net/snmp").stdout.splitlines()
             if ln.startswith("Ip:")]
    return int(lines[1][lines[0].index("ForwDatagrams")])


def pings(src_ns: str, dst_ip: str) -> bool:
    return subprocess.run(["nsenter", f"--net=/run/netns/{src_ns}", "ping", "-c1", "-W1", dst_ip],
                          capture_output=True).returncode == 0


def test_bandwidth_capability_limits_the_pod_both_ways(chain):
    node, net, path = chain
    caps = {"bandwidth": {"ingressRate": RATE, "ingressBurst": BURST, "egressRate": RATE, "egressBurst": BURST}}
    limited, limited_ip = create(node, net, path, caps)
    free, free_ip = create(node, net, path, None)
    server, server_ip = create(node, net, path, None)
    try:
        # the plugin's shaping is on the limited pod's host veth (and its ifb), nowhere else
        qdisc = sh("tc", "-n", node.ns, "qdisc", "show", "dev", "nv" + limited.container_id[:11]).stdout
        assert "tbf" in qdisc, qdisc
        assert "tbf" not in sh("tc", "-n", node.ns, "qdisc", "show", "dev", "nv" + free.container_id[:11]).stdout
        fwd0 = forwarded(node)
        egress = iperf(limited.pod_netns, server.pod_netns, server_ip, reverse=False)  # the pod sends
        ingress = iperf(limited.pod_netns, server.pod_netns, server_ip, reverse=True)  # the pod receives
        fwd1 = forwarded(node)
        unlimited = iperf(free.pod_netns, server.pod_netns, server_ip, reverse=False)
        unlimited_in = iperf(free.pod_netns, server.pod_netns, server_ip, reverse=True)
        fwd2 = forwarded(node)
        assert abs(egress - RATE) <= 0.1 * RATE, f"egress {egress / 1e6:.1f} Mbit/s, limit {RATE / 1e6:.0f}"
        assert abs(ingress - RATE) <= 0.1 * RATE, f"ingress {ingress / 1e6:.1f} Mbit/s, limit {RATE / 1e6:.0f}"
        assert unlimited > 3 * RATE, f"a pod without the capability got only {unlimited / 1e6:.1f} Mbit/s"
        assert unlimited_in > 3 * RATE, f"a pod without the capability received only {unlimited_in / 1e6:.1f} Mbit/s"
        if node.config["datapath"] == "ebpf":
            # the limited pod's traffic crossed the stack (its qdiscs); the unlimited pod's none of it
            assert fwd1 - fwd0 > 1000, f"limited pod: {fwd1 - fwd0} packets forwarded by the stack"
            assert fwd2 - fwd1 == 0, f"unlimited pod: {fwd2 - fwd1} packets left the redirect path"
            # NetworkPolicy holds for the limited pod both ways (the kernel datapath enforces none)
            assert pings(limited.pod_netns, server_ip) and pings(server.pod_netns, limited_ip)
            node.write_manifest("deny.yaml", [
                *({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": inv.pod, "namespace": "default"},
                   "spec": {"nodeName": node.config["nodeName"], "containers": [{"name": "c"}]}}
                  for inv in (limited, server)),
                {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "deny-ingress", "namespace": "default"},
                 "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}])
            deadline = time.monotonic() + 20
            while pings(limited.pod_netns, server_ip) or pings(server.pod_netns, limited_ip):
                assert time.monotonic() < deadline, "default-deny ingress never applied to the limited pod's traffic"
    finally:
        for inv in (limited, free, server):
            labcni.delete(inv, net, None)
    # DEL through the chain removed the plugin's ifb device from the node
    assert "ifb" not in sh("ip", "-n", node.ns, "-o", "link", "show", "type", "ifb").stdout
