"""Established Service connections survive 5 agent and 5 dataplane SIGKILLs and a program swap
with zero loss: a UDP sequence stream through the ClusterIP on the per-packet path (its client
outside the node's cgroup) and a TCP stream (iperf3) through the ClusterIP on the socket path
(``novanet lab exec``: the node's cgroup), both to a backend on another node."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from novanet_core.api.client import ApiClient
from tests.services_datapath.test_services_lab import publish
from tests.support.lab import BIN, LabUnderTest
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow,
              pytest.mark.long]

UDP_SEQ = str(Path(__file__).resolve().parents[1] / "support" / "udp_seq.py")
VIP = "10.96.60.10"
SPEC = {
    "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan", "datapath": "ebpf"},
    "nodes": [{"name": "node-1"}, {"name": "node-2"}],
    "namespaces": [{"name": "x", "labels": {"ns": "x"}}],
    "pods": [{"name": "a", "namespace": "x", "node": "node-1", "labels": {"app": "client"}},
             {"name": "b", "namespace": "x", "node": "node-2", "labels": {"app": "stream"}}],
}


def objects(lab: LabUnderTest) -> list[dict]:
    ports = [{"name": "iperf", "port": 5201, "targetPort": 5201, "protocol": "TCP"},
             {"name": "seq", "port": 9000, "targetPort": 9000, "protocol": "UDP"}]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "stream", "namespace": "x"},
         "spec": {"clusterIP": VIP, "ports": ports}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "stream-1", "namespace": "x", "labels": {"kubernetes.io/service-name": "stream"}},
         "addressType": "IPv4", "ports": [{"name": p["name"], "port": p["port"], "protocol": p["protocol"]} for p in ports],
         "endpoints": [{"addresses": [lab.pod_ip("x/b")], "conditions": {"ready": True}, "nodeName": "node-2"}]},
    ]


@pytest.fixture
def lab(tmp_path):
    lab = LabUnderTest(SPEC, tmp_path)
    try:
        lab.up()
        publish(lab, objects(lab), expect=2)
        yield lab
    finally:
        lab.down()


def test_service_streams_survive_kills_and_a_swap(lab: LabUnderTest) -> None:
    echo = lab.in_pod("x/b", "python3", UDP_SEQ, "echo", "9000")
    iperf_srv = lab.in_pod("x/b", "iperf3", "-s", "-1")
    stream = None
    watch = None
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        lab.wait_listening("x/b", 5201)
        watch = PingWatch(lambda *argv: lab.in_pod("x/a", *argv), VIP,
                          argv=["python3", UDP_SEQ, "send", VIP, "9000", "0.01"])
        # socket level: lab exec puts iperf3 in node-1's cgroup, connect4 translates both its connections
        stream = subprocess.Popen([str(BIN / "novanet"), "lab", "exec", "--name", lab.name, "x/a", "--", "iperf3",
                                   "-c", VIP, "-t", "300", "-i", "1", "-b", "100M", "--forceflush"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watch.wait_replies(50)
        first = watch.mark()
        for daemon in ("agent", "dataplane"):
            for _ in range(5):  # both nodes at once: the client's (translation) and the backend's
                lab.cli("lab", "restart", "--daemon", daemon, "--kill")
        with ApiClient(str(lab.paths.socket("node-1", "dataplane")), timeout=120) as c:
            swapped = c.call("ebpf.reload")
        assert swapped["services_swapped"], swapped  # the cgroup and underlay links took the new version
        last = watch.mark(ahead=100)
        watch.wait_replied(last)
    finally:
        if watch is not None:
            watch.stop()
        out = err = ""
        if stream is not None:
            stream.send_signal(signal.SIGINT)
            out, err = stream.communicate(timeout=30)
        for p in (echo, iperf_srv):
            p.kill()
            p.wait()
    lost = watch.lost(last)
    print(f"UDP through {VIP} every 10 ms: {last - first} requests during 5 agent and 5 dataplane SIGKILLs (each node) "
          f"and a swap, {len(lost)} lost", file=sys.stderr)
    assert last - first > 100 and lost == [], lost[:20]
    rates = [float(x) for x in re.findall(r"sec\s+[\d.]+ \w?Bytes\s+([\d.]+) \w?bits/sec", out.split("- - - -")[0])]
    assert len(rates) >= 5 and min(rates) > 0, out + err  # the TCP stream never stalled a whole second
    st = [s for s in lab.ctl("service", "list") if s["ip"] == VIP]
    assert {(s["port"], s["protocol"]) for s in st} == {(5201, "TCP"), (9000, "UDP")}
