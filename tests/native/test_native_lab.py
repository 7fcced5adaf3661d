"""3-node native-routing labs (full mesh with BFD, and through a ToR router): reachability with no
encapsulation, proto bgp routes, the routing CLI, agent SIGKILL without flap, bgpd restart, and
BFD failover (the time is recorded, not asserted)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from novanet_lab import frr, frr_failover, restart

from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def _spec(example: str) -> dict:
    spec = yaml.safe_load((ROOT / "examples" / example).read_text())
    # Two pods per node are enough here; the example's 9 are for the conformance suite.
    spec["pods"] = [p for p in spec["pods"] if p["namespace"] in ("x", "y")]
    return spec


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    lab = LabUnderTest(_spec("lab-native.yaml"), tmp_path_factory.mktemp("native"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        assert not list(Path("/run/frr").glob(f"{lab.name}_*")), "lab down left FRR pathspace links"


def vtysh_json(lab: LabUnderTest, node: str, cmd: str):
    r = subprocess.run(["vtysh", "-N", frr.pathspace(lab.paths, node), "-c", cmd], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def peers(lab: LabUnderTest, node: str) -> dict:
    return vtysh_json(lab, node, "show bgp summary json")["ipv4Unicast"]["peers"]


def test_every_pod_reaches_every_pod(native):
    res = native.probe("--port", "80", "--protocol", "TCP")
    assert len(res) == 36 and all(r["allowed"] for r in res), [r for r in res if not r["allowed"]]


def test_remote_podcidrs_are_bgp_routes_and_no_tunnel_devices(native):
    st = native.status()
    cidrs = {n["name"]: n["podCIDR"] for n in st["nodes"]}
    for node in cidrs:
        routes = native.run_in(native.node_netns(node), "ip", "-j", "route", "show", "proto", "bgp", check=True)
        got = {r["dst"] for r in json.loads(routes.stdout)}
        assert got == {c for n, c in cidrs.items() if n != node}
        links = json.loads(native.run_in(native.node_netns(node), "ip", "-j", "-d", "link", "show", check=True).stdout)
        kinds = {(link.get("linkinfo") or {}).get("info_kind") for link in links}
        assert not kinds & {"vxlan", "geneve", "ipip", "gre"}, kinds


def test_wire_carries_plain_ipv4_between_pod_ips(native):
    src, dst = native.pod_ip("x/a"), native.pod_ip("x/b")  # node-1 -> node-2
    cap = subprocess.Popen(["ip", "netns", "exec", native.paths.underlay_netns, "tshark", "-i", "br0", "-n", "-l",
                            "-a", "duration:6", "-f", f"host {dst} or udp port 4789 or udp port 6081",
                            "-T", "fields", "-e", "frame.protocols", "-e", "ip.src", "-e", "ip.dst"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # tshark reports "Capture started" on stderr once its socket is open (a fixed sleep is
        # not enough for its start-up on a loaded machine)
        started, deadline = "", time.monotonic() + 20
        while "Capture started" not in started and time.monotonic() < deadline and cap.poll() is None:
            started += cap.stderr.readline()  # type: ignore[union-attr]
        assert "Capture started" in started, f"tshark did not start capturing: {started}"
        p = native.in_pod("x/a", "ping", "-c", "3", "-i", "0.2", dst)
        assert p.wait(10) == 0, p.stdout.read() if p.stdout else ""
        out, err = cap.communicate(timeout=15)
    finally:
        cap.kill()
    frames = [line.split("\t") for line in out.splitlines() if line.strip()]
    assert frames, f"tshark captured nothing: {err}"
    assert ["eth:ethertype:ip:icmp:data", src, dst] in frames and ["eth:ethertype:ip:icmp:data", dst, src] in frames
    assert not [f for f in frames if "udp" in f[0] or "vxlan" in f[0] or "geneve" in f[0]], frames


def test_routing_cli(native):
    st = native.ctl("routing", "status")
    assert st["connected"] and st["asn"] == 64514 and st["routerId"] == "172.30.0.2" and st["mode"] == "full-mesh"
    # `lab up` waits for routes, not for BFD, which comes up a moment after its BGP session
    deadline = time.monotonic() + 15
    while True:
        rows = native.ctl("routing", "peers")
        # full-mesh eBGP: each peer sends its own PodCIDR and (with a longer path) the third node's
        ok = all(r["state"] == "Established" and r["bfd"] == "up" and r["pfxRcvd"] == 2 for r in rows)
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {r["neighbor"] for r in rows} == {"172.30.0.3", "172.30.0.4"}
    assert ok, rows
    pfx = native.ctl("routing", "prefixes")
    assert {p["prefix"] for p in pfx if p["direction"] == "advertised"} == {"10.42.0.0/24"}
    assert {p["prefix"] for p in pfx if p["direction"] == "learned"} == {"10.42.1.0/24", "10.42.100.0/24"}
    bfd = native.ctl("routing", "bfd")
    assert {(b["peer"], b["status"], b["receiveInterval"], b["detectMultiplier"]) for b in bfd} == {
        ("172.30.0.3", "up", 300, 3), ("172.30.0.4", "up", 300, 3)}
    table = subprocess.run([str(ROOT / ".venv/bin/novanetctl"), "--lab", native.name, "--node", "node-1", "routing",
                            "peers"], capture_output=True, text=True, timeout=30).stdout
    assert table.splitlines()[0].split() == ["NEIGHBOR", "REMOTE_AS", "STATE", "PFX_RCVD", "PFX_SENT", "BFD", "UPTIME"]


def test_agent_sigkill_keeps_sessions_without_flap(native):
    before = peers(native, "node-2")
    ping = native.in_pod("x/a", "ping", "-c", "40", "-i", "0.05", native.pod_ip("x/b"))
    restart.restart(native.name, ["node-2"], ["agent"], hard=True)
    after_restart = native.ctl("routing", "status", node="node-2")
    deadline = time.monotonic() + 20  # until the new agent has compared FRR's config again (reconcileInterval: 2)
    while native.ctl("routing", "status", node="node-2")["reconciles"] <= after_restart["reconciles"]:
        assert time.monotonic() < deadline, "the restarted agent never reconciled FRR"
        time.sleep(0.2)
    after = peers(native, "node-2")
    for addr, p in before.items():
        assert after[addr]["state"] == "Established"
        assert after[addr]["connectionsEstablished"] == p["connectionsEstablished"], (p, after[addr])
        assert after[addr]["peerUptimeMsec"] > p["peerUptimeMsec"]  # still counting: never reset
    st = native.ctl("routing", "status", node="node-2")
    assert after_restart["connected"] and st["applies"] == 0, st  # FRR already right: nothing re-sent
    ping.wait(20)
    out = ping.stdout.read()
    assert " 0% packet loss" in out, out


def test_bgpd_restart_recovers(native):
    netns = native.paths.node_netns("node-3")
    pid = frr.restart_daemon(native.paths, "node-3", netns, "bgpd", hard=True)
    assert pid
    # Sessions coming back is not the end of recovery: the new bgpd still has to run best-path
    # and hand the routes to zebra, which installs them in the kernel a moment later. Wait for
    # the kernel routes too, since those are what carry the traffic.
    deadline = time.monotonic() + 30
    p: dict = {}
    routes: set[str] = set()
    while time.monotonic() < deadline:
        try:
            p = peers(native, "node-3")
        except (AssertionError, KeyError, ValueError):
            p = {}
        routes = frr.bgp_routes(netns)
        if (len(p) == 2 and all(v["state"] == "Established" and v["pfxRcd"] == 2 for v in p.values())
                and routes == {"10.42.0.0/24", "10.42.1.0/24"}):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"node-3 did not recover after a bgpd restart: sessions {p}, kernel bgp routes {routes}")
    res = native.probe("--from", "x/c", "--port", "80", "--protocol", "TCP")
    assert all(r["allowed"] for r in res), res


def test_bfd_failover_withdraws_route(native):
    # node-2, not node-3: node-3's bgpd was restarted above, and its peers keep its routes as
    # graceful-restart stale paths for a while, which is not what this test measures.
    failing, observers = "node-2", ["node-1", "node-3"]
    failing_ip = native.status()["nodes"][[n["name"] for n in native.status()["nodes"]].index(failing)]["ip"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # BFD must be up towards the failing node on every observer
        states = [{b["peer"]: b["status"] for b in native.ctl("routing", "bfd", node=o)}.get(failing_ip)
                  for o in observers]
        if states == ["up"] * len(observers):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"BFD sessions to {failing} not up on {observers}: {states}")
    r = frr_failover.measure(native.name, failing, observers, timeout=20)
    assert all(v is not None for v in r.seconds.values()), r  # the route went away
    assert all(v is not None for v in r.restored.values()), r  # and came back with the link
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "native_failover_test.json").write_text(json.dumps(
        {"bfd": "300ms x 3", "withdrawnAfterSeconds": r.seconds, "restoredAfterSeconds": r.restored,
         "time": time.time()}, indent=2) + "\n")
    print(f"BFD failover: route to {r.pod_cidr} gone after {r.seconds}, back after {r.restored}")


def test_tor_variant(tmp_path):
    lab = LabUnderTest(_spec("lab-native-tor.yaml"), tmp_path)
    try:
        lab.up()
        res = lab.probe("--port", "80", "--protocol", "TCP")
        assert len(res) == 36 and all(r["allowed"] for r in res), [r for r in res if not r["allowed"]]
        tor = peers(lab, "tor")
        assert len(tor) == 3 and all(p["state"] == "Established" and p["pfxRcd"] == 1 for p in tor.values()), tor
        for node in ("node-1", "node-2", "node-3"):
            # only the ToR as a BGP neighbor, and both other PodCIDRs learned through it
            assert set(peers(lab, node)) == {"172.30.0.254"}  # the router's default: highest free address
            assert len(frr.bgp_routes(lab.paths.node_netns(node))) == 2
    finally:
        lab.down()

