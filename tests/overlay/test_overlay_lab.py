"""The multi-node overlay end to end, once per tunnel protocol (vxlan, geneve) on a 3-node lab:
reachability, the wire format (tshark), MTU edges, a full-size TCP stream, the 0x4000 mark, drop
reasons with flow events, the identity the receiver enforces on, and node churn (last: it changes
the node set)."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
import time

import pytest
import yaml
from novanet_lab.manifests import ManifestWriter
from novanet_lab.paths import LabPaths

from novanet_core.bpf import ktree, layouts_c, netns, syscall
from novanet_core.bpf.layouts import DropReason, EndpointKey, EndpointValue, TunnelKey, TunnelSlot
from tests.overlay.helpers import Capture, agent, dataplane, drop_events, drops, ping, wait_for
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

OVERHEAD = {"vxlan": 50, "geneve": 58}
PORT = {"vxlan": 4789, "geneve": 6081}


def _ips(lab) -> dict[str, str]:
    return {f"{p['namespace']}/{p['name']}": p["ip"] for p in lab.status()["pods"]}


def test_every_pod_reaches_every_other_pod_tcp_udp_icmp(olab):
    results = olab.probe()
    assert results and [r for r in results if not r["allowed"]] == []
    ips = _ips(olab)
    procs = [(s, d, olab.in_pod(s, "ping", "-n", "-c", "1", "-W", "2", ips[d])) for s in ips for d in ips if s != d]
    failed = [(s, d) for s, d, p in procs if p.wait() != 0]
    assert failed == []
    # all three agents know the two others as tunnels, with the protocol's interface
    for node in ("node-1", "node-2", "node-3"):
        rows = olab.ctl("tunnels", node=node)
        assert sorted(r["node"] for r in rows) == sorted({"node-1", "node-2", "node-3"} - {node})
        assert {r["protocol"] for r in rows} == {olab.protocol}
        assert {r["interface"] for r in rows} == {"nvx0" if olab.protocol == "vxlan" else "eth0"}
        st = olab.ctl("status", node=node)
        assert st["tunnels"] == 2 and st["nodes"] == 3 and st["remoteEndpoints"] == 2 + (node != "node-1")


def test_underlay_capture_decodes_as_the_protocol(olab):
    ips = _ips(olab)
    if olab.protocol == "geneve":
        fields = ["ip.src", "ip.dst", "udp.dstport", "geneve.vni", "geneve.option.class", "geneve.option.type",
                  "geneve.option.length", "geneve.option.unknown.data", "eth.type", "icmp.type"]
    else:
        fields = ["ip.src", "ip.dst", "udp.dstport", "vxlan.vni", "vxlan.flag_i", "eth.type", "icmp.type"]
    cap = Capture(olab, "node-2", f"udp port {PORT[olab.protocol]}", fields, count=2)
    try:
        assert ping(olab, "x/a", ips["x/b"]).returncode == 0
        rows = cap.rows()
    finally:
        cap.stop()
    assert len(rows) == 2, cap.startup
    node_ip = {n["name"]: n["ip"] for n in olab.status()["nodes"]}
    req, rep = rows
    # outer and inner addresses are comma-separated lists (outer first, then the inner packet)
    assert req["ip.src"].split(",") == [node_ip["node-1"], ips["x/a"]]
    assert req["ip.dst"].split(",") == [node_ip["node-2"], ips["x/b"]]
    assert rep["ip.src"].split(",") == [node_ip["node-2"], ips["x/b"]]
    assert req["udp.dstport"] == str(PORT[olab.protocol])
    assert (req["icmp.type"], rep["icmp.type"]) == ("8", "0")  # echo request, then the reply, inside
    if olab.protocol == "geneve":
        assert int(req["geneve.vni"], 0) == 1
        assert int(req["geneve.option.class"], 0) == 0xFFF0 and int(req["geneve.option.type"], 0) == 1
        stamped = int(req["geneve.option.unknown.data"].replace(":", ""), 16)
        ids1 = {e["ip"]: e["identity"] for e in olab.ctl("endpoints", node="node-1")}
        assert stamped == ids1[ips["x/a"]]  # the sender stamped x/a's identity
        eps2 = {e["ip"]: e["identity"] for e in olab.ctl("endpoints", node="node-2")}
        assert int(rep["geneve.option.unknown.data"].replace(":", ""), 16) == eps2[ips["x/b"]]
    else:
        assert int(req["vxlan.vni"], 0) == 1


def test_pod_mtu_and_df_edges_across_nodes(olab):
    mtu = 1500 - OVERHEAD[olab.protocol]
    assert olab.ctl("status", node="node-1")["mtu"] == mtu
    link = olab.run_in(olab.pod_netns("x/a"), "ip", "-o", "link", "show", "eth0").stdout
    assert f" mtu {mtu} " in link
    ips = _ips(olab)
    at = ping(olab, "x/a", ips["x/b"], "-M", "do", "-s", str(mtu - 28))
    assert at.returncode == 0, at.stdout + at.stderr
    over = ping(olab, "x/a", ips["x/b"], "-M", "do", "-s", str(mtu - 27))
    assert over.returncode != 0
    assert "message too long" in (over.stdout + over.stderr).lower()
    # without DF the pod fragments; every fragment crosses the tunnel
    assert ping(olab, "x/a", ips["x/c"], "-s", "3000").returncode == 0


def test_misconfigured_pod_mtu_gets_frag_needed_not_a_black_hole(olab):
    """A pod whose MTU is wrongly 1500 sends a DF packet that cannot be encapsulated. The encap
    program hands it to the node stack, whose route for the remote PodCIDR carries the tunnel MTU
    (geneve: `mtu 1442`; vxlan: via nvx0, MTU 1450), so the pod learns the path MTU from ICMP
    frag-needed; a non-DF one is dropped MTU_EXCEEDED (never sent unencapsulated or fragmented)."""
    ips = _ips(olab)
    mtu = 1500 - OVERHEAD[olab.protocol]
    host_if = next(e["host_ifname"] for e in olab.ctl("endpoints", node="node-1") if e["ip"] == ips["y/a"])
    pod, n1 = olab.pod_netns("y/a"), olab.node_netns("node-1")
    olab.run_in(n1, "ip", "link", "set", host_if, "mtu", "1500", check=True)
    olab.run_in(pod, "ip", "link", "set", "eth0", "mtu", "1500", check=True)
    try:
        counters = f"{olab.protocol}.status"
        before = agent(olab, "node-1", counters)["counters"]
        first = ping(olab, "y/a", ips["x/b"], "-M", "do", "-s", "1472")
        assert first.returncode != 0
        assert f"mtu = {mtu}" in first.stdout + first.stderr, first.stdout + first.stderr  # frag-needed
        after = agent(olab, "node-1", counters)["counters"]
        assert after["oversize_df"] > before["oversize_df"]
        # the pod now knows the path MTU: the largest DF packet that fits goes through
        assert ping(olab, "y/a", ips["x/b"], "-M", "do", "-s", str(mtu - 28)).returncode == 0
        dropped = drops(olab, "node-1")["MTU_EXCEEDED"]
        olab.run_in(pod, "ip", "route", "flush", "cache")
        udp = olab.run_in(pod, "python3", "-c",
                          "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                          "s.setsockopt(socket.IPPROTO_IP, 10, 0); "  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
                          f"s.sendto(b'x' * 1460, ('{ips['x/b']}', 80))")
        assert udp.returncode == 0, udp.stderr
        assert wait_for(lambda: drops(olab, "node-1")["MTU_EXCEEDED"] > dropped)
    finally:
        olab.run_in(pod, "ip", "link", "set", "eth0", "mtu", str(mtu))
        olab.run_in(n1, "ip", "link", "set", host_if, "mtu", str(mtu))
        olab.run_in(pod, "ip", "route", "flush", "cache")


def test_full_size_tcp_stream_with_software_segmentation(olab):
    """TSO/GSO skbs are encapsulated whole; with tunnel segmentation offload off on the sender's
    underlay the kernel must cut them into full-size outer packets with correct checksums."""
    ips = _ips(olab)
    n1 = olab.node_netns("node-1")
    server = olab.in_pod("x/b", "iperf3", "-s", "-1")
    try:
        olab.wait_listening("x/b", 5201)
        r = olab.run_in(olab.pod_netns("x/a"), "iperf3", "-c", ips["x/b"], "-t", "1", "-J")
        assert r.returncode == 0, r.stderr
        assert '"bytes"' in r.stdout and '"sum_received"' in r.stdout
    finally:
        server.kill()
        server.wait()
    if olab.protocol == "geneve":
        st = olab.ctl("geneve", node="node-1")
        assert st["counters"]["encap_gso"] > 0 and st["counters"]["encap_error"] == 0
    # software segmentation + software checksums on node-1's underlay device
    olab.run_in(n1, "ethtool", "-K", "eth0", "tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation",
                "off", "tx", "off", check=True)
    fields = ["frame.len", "ip.checksum.status", "tcp.checksum.status", "tcp.len"]
    cap = Capture(olab, "node-2", f"udp port {PORT[olab.protocol]} and src host "
                  f"{olab.status()['nodes'][0]['ip']}", fields, count=200,
                  extra=["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"])
    server = olab.in_pod("x/b", "iperf3", "-s", "-1")
    try:
        olab.wait_listening("x/b", 5201)
        r = olab.run_in(olab.pod_netns("x/a"), "iperf3", "-c", ips["x/b"], "-t", "1")
        assert r.returncode == 0, r.stderr
        rows = cap.rows()
    finally:
        cap.stop()
        server.kill()
        server.wait()
        olab.run_in(n1, "ethtool", "-K", "eth0", "tx-udp_tnl-segmentation", "on", "tx-udp_tnl-csum-segmentation",
                    "on", "tx", "on")
    data = [r for r in rows if r.get("tcp.len") and int(r["tcp.len"].split(",")[-1]) > 0]
    assert len(data) > 50
    assert max(int(r["frame.len"]) for r in data) <= 1514  # 1500-byte outer IP packets at most
    assert sum(1 for r in data if int(r["frame.len"]) == 1514) > len(data) // 2  # full-size segments
    # tshark checksum status: 0 bad, 1 good, 2 unverified
    assert {r["ip.checksum.status"].split(",")[0] for r in data} == {"1"}  # outer IPv4 checksum good
    assert {r["tcp.checksum.status"] for r in data} == {"1"}  # inner TCP checksum good


_MARK_PROBE = r"""
#include <uapi/linux/bpf.h>
BPF_ARRAY(seen, u64, 2);
int mark_probe(struct __sk_buff *skb) {
    u32 k = (skb->mark & 0x4000) ? 1 : 0;
    u64 *v = seen.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    return -1;  /* TCX_NEXT: the datapath's to-pod program still decides */
}
"""


def test_tunnel_ingress_marks_0x4000(olab):
    from bcc import BPF

    ktree.activate("/var/lib/novanet/ktree")
    b = BPF(text=_MARK_PROBE.encode())
    fn = b.load_func(b"mark_probe", BPF.SCHED_CLS)
    ips = _ips(olab)
    host_if = next(e["host_ifname"] for e in olab.ctl("endpoints", node="node-2") if e["ip"] == ips["x/b"])
    with netns.netns(olab.node_netns("node-2")):
        ifindex = socket.if_nametoindex(host_if)  # /sys is not per-netns here; the ioctl is
        link = syscall.tcx_attach(fn.fd, ifindex, ingress=False, flags=syscall.BPF_F_BEFORE)
    try:
        assert ping(olab, "x/a", ips["x/b"], count=3).returncode == 0  # through the tunnel
        assert olab.run_in(olab.node_netns("node-2"), "ping", "-c", "2", "-W", "1", ips["x/b"]).returncode == 0
        seen = {k.value: v.value for k, v in b[b"seen"].items()}
        assert seen.get(1, 0) >= 3  # every tunnelled packet carried the mark
        assert seen.get(0, 0) >= 2  # the node's own packets (from node-2's stack) did not
    finally:
        os.close(link)
        b.cleanup()


def test_no_route_drop_with_flow_event(olab):
    before = drops(olab, "node-1")["NO_ROUTE"]
    ghost = "10.42.1.250"  # inside node-2's PodCIDR (and the cluster CIDR), no such pod
    assert ping(olab, "x/a", ghost).returncode != 0
    assert wait_for(lambda: drops(olab, "node-1")["NO_ROUTE"] > before)
    ev = wait_for(lambda: [e for e in drop_events(olab, "node-1")
                           if e["dst_ip"] == ghost and e["drop_reason_name"] == "NO_ROUTE"])
    assert ev and ev[-1]["src_ip"] == _ips(olab)["x/a"]


def test_receiver_enforces_on_the_identity_the_sender_stamped(olab):
    """node-2 denies x/a -> x/b by identity pair; its endpoints entry for x/a is then made stale.
    Geneve: the identity in the option still matches the rule (denied). VXLAN carries no identity,
    so node-2 decides on the stale map entry (allowed): the reason the Geneve option exists."""
    ips = _ips(olab)
    ids = {e["ip"]: e["identity"] for e in olab.ctl("endpoints", node="node-2")}
    a_id, b_id = ids[ips["x/a"]], ids[ips["x/b"]]
    dataplane(olab, "node-2", "ebpf.policy_upsert", {"src_identity": a_id, "dst_identity": b_id, "action": "deny"})
    root = olab.paths.node_bpf_root("node-2")
    fd = syscall.obj_get(layouts_c.pin_path(str(root), "endpoints"))
    key = bytes(EndpointKey(ip=int(ipaddress.IPv4Address(ips["x/a"]))))
    original = syscall.map_lookup(fd, key, ctypes.sizeof(EndpointValue))
    assert original is not None
    stale = EndpointValue.from_buffer_copy(original)
    stale.identity = 0x7777777  # what a stale entry (old labels) would hold
    try:
        syscall.map_update(fd, key, bytes(stale))
        denied_before = drops(olab, "node-2")["POLICY_DENY_RULE"]
        r = ping(olab, "x/a", ips["x/b"], count=2)
        if olab.protocol == "geneve":
            assert r.returncode != 0
            assert wait_for(lambda: drops(olab, "node-2")["POLICY_DENY_RULE"] > denied_before)
            # the event reaches the API through the ring buffer consumer, a moment after the counter
            ev = wait_for(lambda: [e for e in drop_events(olab, "node-2")
                                   if e["src_ip"] == ips["x/a"] and e["dst_ip"] == ips["x/b"]], step=0.1)
            assert ev and ev[-1]["src_identity"] == a_id  # the stamped one, not 0x7777777
        else:
            assert r.returncode == 0
    finally:
        syscall.map_update(fd, key, original)
        os.close(fd)
        dataplane(olab, "node-2", "ebpf.policy_delete", {"src_identity": a_id, "dst_identity": b_id})
    assert ping(olab, "x/a", ips["x/b"]).returncode == 0


def _inner_frame(src: str, dst: str) -> bytes:
    """Ethernet + IPv4 + UDP (to port 80) with a valid IPv4 header checksum."""
    payload = b"forged"
    udp = struct.pack("!HHHH", 40000, 80, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    words = sum(struct.unpack("!10H", hdr))
    words = (words & 0xFFFF) + (words >> 16)
    csum = ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF
    hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00" + hdr + udp


def test_tunnel_packets_from_an_unknown_sender_are_dropped_untrusted(olab):
    """A host on the underlay that is not a node sends a well-formed tunnel packet for x/b, with an
    inner source from node-1's PodCIDR and (Geneve) a stamped identity: dropped, TUNNEL_UNTRUSTED."""
    ips = _ips(olab)
    node2 = {n["name"]: n["ip"] for n in olab.status()["nodes"]}["node-2"]
    inner = _inner_frame(ips["x/a"], ips["x/b"])
    if olab.protocol == "geneve":
        pkt = bytes([0x02, 0, 0x65, 0x58, 0, 0, 1, 0]) + struct.pack("!HBBI", 0xFFF0, 1, 1, 0x12345678) + inner
    else:
        pkt = bytes([0x08, 0, 0, 0, 0, 0, 1, 0]) + inner
    before = drops(olab, "node-2")["TUNNEL_UNTRUSTED"]
    with netns.netns(LabPaths.netns_path(olab.paths.underlay_netns)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(3):
            s.sendto(pkt, (node2, PORT[olab.protocol]))
    finally:
        s.close()
    assert wait_for(lambda: drops(olab, "node-2")["TUNNEL_UNTRUSTED"] >= before + 3)


def test_cross_node_traffic_survives_killed_daemons_and_new_programs_swap_in(olab):
    """The tunnel programs are held by pins (slot, tcx link), not by the agent that loaded them."""
    ips = _ips(olab)
    root = str(olab.paths.node_bpf_root("node-1"))
    before = layouts_c.tunnel_slot_prog_id(root, TunnelSlot.ENCAP)
    assert before
    watch = PingWatch(lambda *argv: olab.in_pod("x/a", *argv), ips["x/b"], interval=0.01)
    try:
        watch.wait_replies(50)
        first = watch.mark()
        for node in ("node-1", "node-2"):
            olab.cli("lab", "restart", "--node", node, "--kill")
        last = watch.mark(ahead=50)  # half a second of traffic past the restarts
        watch.wait_replied(last)
    finally:
        watch.stop()
    lost = watch.lost(last)
    assert last - first > 50 and lost == [], lost[:20]
    after = layouts_c.tunnel_slot_prog_id(root, TunnelSlot.ENCAP)
    assert after and after != before  # the restarted agent loaded and published a new encap program
    assert [r for r in olab.probe("--from", "x/a") if not r["allowed"]] == []


def _tunnel_nodes(lab, node: str) -> set[str]:
    """Remote node IPs in a node's live tunnels map (read from the pin: no CLI round trip)."""
    fd = syscall.obj_get(layouts_c.pin_path(str(lab.paths.node_bpf_root(node)), "tunnels"))
    try:
        return {str(ipaddress.IPv4Address(TunnelKey.from_buffer_copy(k).node_ip))
                for k in syscall.map_keys(fd, ctypes.sizeof(TunnelKey))}
    finally:
        os.close(fd)


def test_node_churn_updates_tunnels_and_a_removed_node_drops_no_tunnel(olab):
    mw = ManifestWriter(olab.paths.manifest_dir)
    node3 = yaml.safe_load((olab.paths.manifest_dir / mw.filename("Node", "node-3")).read_text())
    node3_ip = {n["name"]: n["ip"] for n in olab.status()["nodes"]}["node-3"]
    # a node joins (its agent does not need to run for the others to build the tunnel)
    mw.write({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-4"},
              "spec": {"podCIDR": "10.42.200.0/24"},
              "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.200"}]}})
    t0 = time.monotonic()
    mw.bump()
    nodes = ("node-1", "node-2", "node-3")
    assert wait_for(lambda: all("172.30.0.200" in _tunnel_nodes(olab, n) for n in nodes), step=0.005)
    joined = time.monotonic() - t0
    for node in nodes:
        assert "node-4" in {r["node"] for r in olab.ctl("tunnels", node=node)}
    # node-3 leaves: the others drop its tunnel; its pods' traffic is dropped NO_TUNNEL (not a hang)
    mw.remove("Node", "node-3")
    t0 = time.monotonic()
    mw.bump()
    assert wait_for(lambda: all(node3_ip not in _tunnel_nodes(olab, n) for n in ("node-1", "node-2")), step=0.005)
    left = time.monotonic() - t0
    for node in ("node-1", "node-2"):
        assert "node-3" not in {r["node"] for r in olab.ctl("tunnels", node=node)}
    before = drops(olab, "node-1")["NO_TUNNEL"]
    ips = _ips(olab)
    r = ping(olab, "x/a", ips["x/c"])
    assert r.returncode != 0
    assert wait_for(lambda: drops(olab, "node-1")["NO_TUNNEL"] > before)
    ev = wait_for(lambda: [e for e in drop_events(olab, "node-1") if e["dst_ip"] == ips["x/c"]], step=0.1)
    assert ev and ev[-1]["drop_reason_name"] == DropReason.NO_TUNNEL.name
    print(f"\n{olab.protocol}: node-4 in every tunnel map after {joined:.3f} s; node-3 gone after {left:.3f} s")
    # node-3 comes back: its tunnel returns and its pods are reachable again
    mw.write(node3)
    mw.bump()
    assert wait_for(lambda: "node-3" in {r["node"] for r in olab.ctl("tunnels", node="node-1")})
    assert wait_for(lambda: ping(olab, "x/a", ips["x/c"]).returncode == 0, timeout=10, step=0.2)
