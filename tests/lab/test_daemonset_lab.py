"""The chart's DaemonSet pod run for real: a 2-node lab whose nodes run NovaNet under ``podman kube play``.

Each node's agent, dataplane (and, native, the FRR sidecar) come from the pod the chart renders
(Helm's engine), run from ``localhost/novanet`` (``make image``) with the node's /opt/cni/bin,
/etc/cni/net.d, /var/lib/cni, /run/novanet, /run/netns and bpffs private to it. The pod's
install-cni init container installs the binary and the conflist; the lab's CNI invoker then
creates the pods through that installed binary, inside the node. The guide's graceful restart
test: a rolling restart (the pod deleted with its grace period and created again, node by node)
under a 10 ms ping between pods on different nodes loses nothing, keeps IPs, and the logs show no
fatal/panic line.

Both are long forms (``make test-long``): a DaemonSet lab's pods take about a minute to start and
each pod's restart 30-80 s on this machine, far over what a ``make test`` lab test may take. The
short one brings up the overlay lab and restarts node-1's pod; the other restarts every node's
pod, overlay and native.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from novanet_lab import agents, procs
from novanet_lab.daemonset import node as ds_node
from novanet_lab.netns import list_netns

from tests.support.busybox import rootfs_tar
from tests.support.lab import LabUnderTest
from tests.support.node import ROOT
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.podman,
              pytest.mark.slow]

STORE = ROOT / "build" / "image" / "storage"
FATAL = re.compile(r"\b(fatal|panic|traceback)\b", re.IGNORECASE)
MIN_PINGS = 500  # per restart, at 10 ms


def spec(mode: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {"clusterCIDR": "10.42.0.0/16", "policy": {"defaultDeny": False}}
    if mode == "native":
        cluster |= {"routingMode": "native", "routing": {"type": "frr-bgp", "settings": {"reconcileInterval": 2}}}
    else:
        cluster |= {"routingMode": "overlay", "tunnelProtocol": "vxlan"}
    return {
        "cluster": cluster,
        "underlay": {"cidr": "172.30.0.0/24", "mtu": 1500},
        "daemonset": {"chart": str(ROOT / "charts" / "novanet"), "imageStore": str(STORE)},
        "nodes": [{"name": "node-1"}, {"name": "node-2"}],
        "namespaces": [{"name": "x"}],
        "pods": [{"name": "a", "namespace": "x", "node": "node-1"}, {"name": "b", "namespace": "x", "node": "node-2"}],
    }


@pytest.fixture
def dslab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabUnderTest]:
    assert (STORE / "overlay-images").is_dir(), "the image store is missing: run `make image`"
    lab = LabUnderTest(spec(request.param), tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        # down removed the pods and containers (through the node's podman), then the node's mount
        # namespace holder, netns, pins and dirs; nothing of the lab is left running
        assert list_netns(lab.paths.netns_prefix) == []
        assert procs.find_lab_processes([], agents.markers(lab.paths)) == []
        assert not lab.paths.state_dir.exists() and not lab.paths.run_dir.exists() and not lab.paths.bpf_dir.exists()


def node_root(lab: LabUnderTest, node: str) -> Path:
    """The node's own filesystem view (its mount namespace, held by the lab's holder process)."""
    holder = ds_node.holder_pid(lab.paths, node)
    assert holder is not None, f"{node}: no mount namespace holder"
    return Path(f"/proc/{holder}/root")


def check_installed_cni(lab: LabUnderTest, node: str) -> None:
    root = node_root(lab, node)
    binary = root / "opt/cni/bin/novanet-cni"
    assert binary.is_file() and binary.read_bytes()[:4] == b"\x7fELF"  # the C binary, not a Python launcher
    installed = json.loads((root / "etc/cni/net.d/10-novanet.conflist").read_text())
    shipped = json.loads((ROOT / "contrib" / "10-novanet.conflist").read_text())
    shipped["plugins"][0]["agentSocket"] = "/run/novanet/cni.sock"  # the lab's socket name (chart value sockets.cni)
    assert installed == shipped
    # the pod's hostPaths are the node's: the machine's own CNI directories did not get them
    assert not Path("/opt/cni/bin/novanet-cni").exists() or Path("/opt/cni/bin/novanet-cni").stat().st_ino != binary.stat().st_ino


def check_podman_as_a_second_runtime(lab: LabUnderTest, node: str, tmp_path: Path) -> None:
    """The node's podman as a workload runtime (``podman run --network <the conflist's name>``): its
    CNI ADD goes through the installed binary to the node's agent, the container reaches the lab's
    pod on the same node, and podman's DEL when it exits leaves no endpoint behind. (Other nodes
    learn pods from the state source, where the kubelet would report them; nothing reports a
    podman container there, so they do not route back to it, as for any pod the API server does
    not know.)"""
    network = json.loads((node_root(lab, node) / "etc/cni/net.d/10-novanet.conflist").read_text())["name"]
    image = f"localhost/novanet-ds-busybox:{tmp_path.name[-12:].lower()}"
    peer = lab.pod_ip("x/a")  # on node-1
    ds_node.run_podman(lab.paths, node, "import", str(rootfs_tar(tmp_path)), image, workload=True)
    before = {e["ip"] for e in lab.ctl("endpoints", node=node)}
    r = ds_node.run_podman(lab.paths, node, "run", "--rm", "--network", network, image,
                           "sh", "-c", f"ip -o -4 addr show eth0 && ping -c 3 -W 2 {peer}", workload=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"inet 10\.42\.0\.\d+/", r.stdout), r.stdout  # an address of node-1's PodCIDR
    assert " 0% packet loss" in r.stdout, r.stdout
    deadline = time.monotonic() + 20  # podman's cleanup DEL runs after the container exits
    while {e["ip"] for e in lab.ctl("endpoints", node=node)} != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {e["ip"] for e in lab.ctl("endpoints", node=node)} == before


def fatal_lines(lab: LabUnderTest, node: str) -> list[str]:
    """Lines of the node's containers' logs (the replaced pods' and the running one's) that say fatal/panic."""
    return [f"{node}/{daemon}: {line}" for daemon in ("agent", "dataplane", "frr")
            for line in ds_node.logs(lab.paths, node, daemon).splitlines() if FATAL.search(line)]


def _cache_loads(lab: LabUnderTest, node: str) -> int:
    return ds_node.logs(lab.paths, node, "dataplane").count("loaded from the compiled-program cache")


def rolling_restart_loses_nothing(lab: LabUnderTest, nodes: list[str]) -> list[dict[str, Any]]:
    ips = {p: lab.pod_ip(p) for p in ("x/a", "x/b")}
    watch = PingWatch(lambda *argv: lab.in_pod("x/a", *argv), ips["x/b"], interval=0.01)
    figures = []
    try:
        watch.wait_replies(50)
        for node in nodes:  # pod by pod, as a DaemonSet's RollingUpdate with maxUnavailable 1
            first = watch.mark()
            cache_loads = _cache_loads(lab, node)
            report = json.loads(lab.cli("lab", "restart", "--node", node, "-o", "json").stdout)
            last = watch.mark(ahead=50)  # half a second of traffic past the new pod's readiness
            watch.wait_replied(last)
            lost = watch.lost(last, start=first)
            figures.append({"node": node, "pings": last - first, "lost": len(lost), "seconds": report[0]["seconds"]})
            assert {r["daemon"] for r in report} == {"agent", "dataplane"}
            assert all(r["newPid"] and r["newPid"] != r["oldPid"] for r in report), report
            assert last - first >= MIN_PINGS, figures[-1]
            assert lost == [], (figures[-1], lost[:20])
            # the replaced pod's dataplane loaded its programs from the node's cache (hostPath)
            assert _cache_loads(lab, node) > cache_loads, ds_node.logs(lab.paths, node, "dataplane")[-3000:]
    finally:
        watch.stop()
    print("rolling restart:", json.dumps(figures))
    assert {p: lab.pod_ip(p) for p in ips} == ips  # IPs are kept
    return figures


def check_reach(lab: LabUnderTest) -> None:
    """The pods on the two nodes answer each other's pings, both ways."""
    for src, dst in (("x/a", "x/b"), ("x/b", "x/a")):
        r = lab.run_in(lab.pod_netns(src), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", lab.pod_ip(dst))
        assert r.returncode == 0, f"{src} -> {dst}: {r.stdout}{r.stderr}"


@pytest.mark.long
@pytest.mark.parametrize("dslab", ["overlay"], indirect=True)
def test_overlay_daemonset_pods_install_cni_and_a_node_restart_loses_no_ping(dslab, tmp_path):
    for node in ("node-1", "node-2"):
        check_installed_cni(dslab, node)
    check_reach(dslab)
    check_podman_as_a_second_runtime(dslab, "node-1", tmp_path)
    rolling_restart_loses_nothing(dslab, ["node-1"])
    check_reach(dslab)
    assert fatal_lines(dslab, "node-1") == []


@pytest.mark.long
@pytest.mark.parametrize("dslab", ["overlay", "native"], indirect=True)
def test_rolling_restart_of_every_node_loses_no_ping(dslab):
    for node in ("node-1", "node-2"):
        check_installed_cni(dslab, node)
    if dslab.spec["cluster"]["routingMode"] == "native":
        routes = dslab.run_in(dslab.node_netns("node-1"), "ip", "route", "show", "proto", "bgp").stdout
        assert "10.42.1.0/24" in routes, routes  # learned from node-2's FRR sidecar over BGP
    check_reach(dslab)
    rolling_restart_loses_nothing(dslab, ["node-1", "node-2"])
    check_reach(dslab)
    assert [line for n in ("node-1", "node-2") for line in fatal_lines(dslab, n)] == []
