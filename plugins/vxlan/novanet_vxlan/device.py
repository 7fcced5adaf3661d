"""The shared VXLAN device ``nvx0`` and the per-remote-node kernel routes through it.

One collect-metadata ("external") device per node, UDP 4789, learning off: the remote VTEP is
chosen per packet, either by the route's lightweight-tunnel metadata (this module, used by the
kernel datapath and for traffic the host itself originates) or by a BPF program setting the
tunnel key (the eBPF datapath).
"""

from __future__ import annotations

import logging
import subprocess

from novanet_core import netlink
from novanet_core.protocols import RTPROT_NOVANET

log = logging.getLogger(__name__)

AF_INET, AF_INET6 = 2, 10
DEVICE = "nvx0"
PORT = 4789
VNI = 1
OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (an IPv6 underlay: 40 + ... = 70)
OVERHEAD6 = OVERHEAD + 20
# The outer UDP source port of packets the encap program encapsulates itself (IPv6 underlay): a
# hash of the inner flow scaled into the kernel's default ephemeral range, as the driver does.
SPORT_MIN, SPORT_MAX = 32768, 61000
# Link-local next hop for remote PodCIDR routes; resolved by a permanent neighbour entry so no
# ARP ever crosses the collect-metadata device (it could not be answered there). In BPF mode every
# node's nvx0 carries NEXT_HOP_MAC itself, so a decapsulated frame is addressed to the receiving
# device (with another MAC the receiver would see PACKET_OTHERHOST and drop it), and the tunnel's
# egress program gives the stack's frames a source MAC of the node's own.
#
# Routes only (no BPF to rewrite the source): the vxlan driver drops a received frame whose source
# is its own address (a loop), so there each nvx0 has a MAC of its own (node_mac) and each remote
# PodCIDR is routed via a next hop of that remote's (remote_next_hop), resolved permanently to the
# remote's MAC: the frame leaves with the sender's MAC and arrives addressed to the receiver's.
NEXT_HOP = "169.254.42.1"
NEXT_HOP_MAC = "02:fe:a9:fe:2a:01"
# The same for IPv6 inner packets (remote IPv6 PodCIDRs; over either underlay family).
NEXT_HOP6 = "fe80::a9fe:2a01"


def node_mac(node_ip: str) -> str:
    """A node's own nvx0 MAC in routes-only mode: 02:fe + its IPv4 address (the same rule the BPF
    egress program uses for the source of the stack's frames)."""
    return "02:fe:" + ":".join(f"{int(b):02x}" for b in node_ip.split("."))


def remote_next_hop(node_ip: str, family: int) -> str:
    """Routes only: the next hop standing for remote ``node_ip`` on nvx0: the node IP itself for
    IPv4 (neighbour entries are per device, so this one never meets the underlay's ARP), and the
    node IP in the low 32 bits of a link-local address for IPv6."""
    if family == 4:
        return node_ip
    a, b, c, d = (int(x) for x in node_ip.split("."))
    return f"fe80::a9fe:0:{a << 8 | b:x}:{c << 8 | d:x}"


def ensure_device(node_ip: str, mtu: int, mac: str = NEXT_HOP_MAC) -> int:
    with netlink.IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DEVICE)
        if idx:
            link = ipr.get_links(idx[0])[0]
            info = link.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            ok = (info and info.get_attr("IFLA_INFO_KIND") == "vxlan" and data
                  and data.get_attr("IFLA_VXLAN_COLLECT_METADATA") and data.get_attr("IFLA_VXLAN_PORT") == PORT
                  and link.get_attr("IFLA_ADDRESS") == mac)
            if not ok:
                log.warning("%s exists with other settings; recreating it", DEVICE)
                ipr.link("del", index=idx[0])
                idx = []
        if not idx:
            # A collect-metadata device opens a UDP socket per family, so one nvx0 serves an IPv4 and
            # an IPv6 underlay alike; over IPv6 our senders compute the UDP checksum (the encap
            # program's tunnel key, the routes' "csum"), and zero-checksum IPv6 from other VTEPs is
            # accepted too (RFC 6935: the inner packets carry their own checksums).
            ipr.link("add", ifname=DEVICE, kind="vxlan", vxlan_collect_metadata=1, vxlan_port=PORT,
                     vxlan_learning=0, vxlan_udp_zero_csum6_rx=1, address=mac, mtu=mtu)
            idx = ipr.link_lookup(ifname=DEVICE)
        ipr.link("set", index=idx[0], mtu=mtu, state="up")
        ipr.neigh("replace", dst=NEXT_HOP, lladdr=NEXT_HOP_MAC, ifindex=idx[0], state=0x80)  # NUD_PERMANENT
        ipr.neigh("replace", dst=NEXT_HOP6, lladdr=NEXT_HOP_MAC, ifindex=idx[0], state=0x80, family=AF_INET6)
        return idx[0]


def delete_device() -> None:
    with netlink.IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DEVICE)
        if idx:
            ipr.link("del", index=idx[0])


def set_routes(routes: list[tuple[str, str, str | None]], per_node: bool = False) -> str:
    """Routes (pod_cidr, node_ip, src): each ``pod_cidr`` (either family) through the tunnel to
    underlay address ``node_ip`` (either family); ``src``: the node's address of ``pod_cidr``'s family,
    for traffic the node originates; ``per_node``: routes-only mode, via the remote's own next
    hop (module docstring). One iproute2 process per family (``ip -batch``): one process per
    route was 999 forks for a 1,000-node cluster, 30 s of an agent's start on this machine.
    Every line is tried (``-force``); returns iproute2's error output, empty when all were set."""
    errors = []
    for fam in (4, 6):
        lines = [" ".join(_route_args(c, n, s, per_node)) for c, n, s in routes if (":" in c) == (fam == 6)]
        if lines:
            p = subprocess.run(["ip", f"-{fam}", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                               capture_output=True, text=True)
            if p.returncode != 0:
                errors.append(p.stderr.strip())
    return "\n".join(errors)


def _route_args(pod_cidr: str, node_ip: str, src: str | None, per_node: bool) -> list[str]:
    v6 = ":" in pod_cidr
    via = NEXT_HOP6 if v6 else NEXT_HOP
    if per_node:
        via = remote_next_hop(node_ip, 6 if v6 else 4)
        with netlink.IPRoute() as ipr:
            ipr.neigh("replace", dst=via, lladdr=node_mac(node_ip), ifindex=ipr.link_lookup(ifname=DEVICE)[0],
                      state=0x80, family=AF_INET6 if v6 else AF_INET)  # NUD_PERMANENT
    # pyroute2 0.9.7 cannot encode LWTUNNEL_ENCAP_IP ("encap ip"), so this one route type goes
    # through iproute2.
    encap = ["encap", "ip6", "id", str(VNI), "dst", node_ip, "csum"] if ":" in node_ip else \
        ["encap", "ip", "id", str(VNI), "dst", node_ip]
    args = ["route", "replace", pod_cidr, *encap, "via", via, "dev", DEVICE, "onlink", "proto", str(RTPROT_NOVANET)]
    if src:
        args += ["src", src]
    return args


def delete_route(pod_cidr: str) -> None:
    with netlink.IPRoute() as ipr:
        try:
            ipr.route("del", dst=pod_cidr, proto=RTPROT_NOVANET, family=AF_INET6 if ":" in pod_cidr else AF_INET)
        except netlink.NetlinkError:
            pass


def prune_next_hops(keep: set[str]) -> None:
    """Routes only: drop the permanent neighbour entries of remotes no longer routed."""
    fixed = {NEXT_HOP, NEXT_HOP6}
    with netlink.IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DEVICE)
        if not idx:
            return
        for fam in (AF_INET, AF_INET6):
            for n in ipr.get_neighbours(family=fam, ifindex=idx[0]):
                dst = n.get_attr("NDA_DST")
                if dst and dst not in keep and dst not in fixed and n["state"] & 0x80:
                    try:
                        ipr.neigh("del", dst=dst, ifindex=idx[0], family=fam)
                    except netlink.NetlinkError:
                        pass


def routes() -> dict[str, str]:
    """Remote PodCIDR -> device for the routes this plugin owns."""
    out = {}
    with netlink.IPRoute() as ipr:
        for fam, host_len in ((AF_INET, 32), (AF_INET6, 128)):
            for r in ipr.get_routes(family=fam, proto=RTPROT_NOVANET):
                if r["dst_len"] < host_len and r.get_attr("RTA_DST"):
                    out[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = DEVICE
    return out
