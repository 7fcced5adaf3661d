"""A bandwidth-limited pod talking across nodes (overlay, VXLAN and Geneve), eBPF datapath.

The limited pod is created on node-1 through the node's own conflist with the reference
``bandwidth`` plugin chained and the capability declared (what the shipped conflist does), the
lab's CNI invoker playing the runtime. Its packets cross node-1's stack both ways (the tunnel
ingress hands them there too): iperf3 to and from x/b on node-2 stays within 10 % of the limit,
and TCP connections work in both directions.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from novanet_lab import cni as labcni
from novanet_lab.manifests import ManifestWriter, pod_object

from tests.support.node import sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow,
              pytest.mark.long]

RATE = 40_000_000  # bits/s
BURST = 400_000  # bits


def iperf(client_ns: str, server_ns: str, server_ip: str, reverse: bool) -> float:
    port = str(21000 + int(uuid.uuid4().hex[:3], 16))
    srv = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-p", port],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while f":{port} " not in sh("nsenter", f"--net={server_ns}", "ss", "-Hltn").stdout:
            assert time.monotonic() < deadline, "iperf3 server never listened"
            time.sleep(0.05)
        r = sh("nsenter", f"--net={client_ns}", "iperf3", "-c", server_ip, "-p", port, "-t", "3", "-O", "1", "-J",
               *(["-R"] if reverse else []))
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait()


def pings(src_ns: str, dst_ip: str) -> bool:
    return subprocess.run(["nsenter", f"--net={src_ns}", "ping", "-c1", "-W1", dst_ip], capture_output=True).returncode == 0


def test_limited_pod_is_held_to_its_limit_across_nodes(olab):
    node_ns = Path(olab.node_netns("node-1")).name
    net = json.loads(olab.paths.node_conflist("node-1").read_text())
    net["cniVersion"] = "1.0.0"  # the shipped conflist's version: the reference plugins here speak at most 1.0.0
    net["plugins"][0]["capabilities"] = {"bandwidth": True}
    net["plugins"].append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    pod_ns = f"{olab.name}-bw{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", pod_ns)
    inv = labcni.CniInvocation(node_netns=node_ns, pod_netns=pod_ns, container_id=f"bw{uuid.uuid4().hex}",
                               namespace="x", pod=pod_ns,
                               capability_args={"bandwidth": {"ingressRate": RATE, "ingressBurst": BURST,
                                                              "egressRate": RATE, "egressBurst": BURST}})
    writer = ManifestWriter(olab.paths.manifest_dir)
    try:
        sh("ip", "-n", pod_ns, "link", "set", "lo", "up")
        ip = labcni.pod_ip(labcni.add(inv, net))
        # its Pod object, as the API server would have it: the other nodes learn where it lives
        node_ip = next(n["ip"] for n in olab.status()["nodes"] if n["name"] == "node-1")
        writer.write(pod_object("x", pod_ns, "node-1", {}, [], ip, node_ip))
        far_ns, far_ip = olab.pod_netns("x/b"), olab.pod_ip("x/b")
        deadline = time.monotonic() + 30
        while not (pings(f"/run/netns/{pod_ns}", far_ip) and pings(far_ns, ip)):
            assert time.monotonic() < deadline, f"{olab.protocol}: the limited pod and x/b never reached each other"
        egress = iperf(f"/run/netns/{pod_ns}", far_ns, far_ip, reverse=False)
        ingress = iperf(f"/run/netns/{pod_ns}", far_ns, far_ip, reverse=True)
        assert abs(egress - RATE) <= 0.1 * RATE, f"{olab.protocol}: egress {egress / 1e6:.1f} Mbit/s"
        assert abs(ingress - RATE) <= 0.1 * RATE, f"{olab.protocol}: ingress {ingress / 1e6:.1f} Mbit/s"
    finally:
        try:
            writer.remove("Pod", pod_ns, "x")
            labcni.delete(inv, net, None)
        finally:
            sh("ip", "netns", "delete", pod_ns)
