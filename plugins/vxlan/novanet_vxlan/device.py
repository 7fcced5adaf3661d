"""The shared VXLAN device ``nvx0`` and the per-remote-node kernel routes through it.

One collect-metadata ("external") device per node, UDP 4789, learning off: the remote VTEP is
chosen per packet, either by the route's lightweight-tunnel metadata (this module, used by the
kernel datapath and for traffic the host itself originates) or by a BPF program setting the
tunnel key (the eBPF datapath).
"""

from __future__ import annotations

import logging
import subprocess

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.protocols import RTPROT_NOVANET

log = logging.getLogger(__name__)

AF_INET, AF_INET6 = 2, 10
DEVICE = "nvx0"
PORT = 4789
VNI = 1
OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
# Link-local next hop for remote PodCIDR routes; resolved by a permanent neighbour entry so no
# ARP ever crosses the collect-metadata device (it could not be answered there). Every node's
# nvx0 carries NEXT_HOP_MAC itself, so the decapsulated frame is addressed to the receiving device
# (with per-node MACs the receiver would see PACKET_OTHERHOST and drop it).
NEXT_HOP = "169.254.42.1"
NEXT_HOP_MAC = "02:fe:a9:fe:2a:01"
# The same for IPv6 inner packets (remote IPv6 PodCIDRs; the underlay stays IPv4).
NEXT_HOP6 = "fe80::a9fe:2a01"


def ensure_device(node_ip: str, mtu: int) -> int:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DEVICE)
        if idx:
            link = ipr.get_links(idx[0])[0]
            info = link.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            ok = (info and info.get_attr("IFLA_INFO_KIND") == "vxlan" and data
                  and data.get_attr("IFLA_VXLAN_COLLECT_METADATA") and data.get_attr("IFLA_VXLAN_PORT") == PORT
                  and link.get_attr("IFLA_ADDRESS") == NEXT_HOP_MAC)
            if not ok:
                log.warning("%s exists with other settings; recreating it", DEVICE)
                ipr.link("del", index=idx[0])
                idx = []
        if not idx:
            ipr.link("add", ifname=DEVICE, kind="vxlan", vxlan_collect_metadata=1, vxlan_port=PORT,
                     vxlan_learning=0, address=NEXT_HOP_MAC, mtu=mtu)
            idx = ipr.link_lookup(ifname=DEVICE)
        ipr.link("set", index=idx[0], mtu=mtu, state="up")
        ipr.neigh("replace", dst=NEXT_HOP, lladdr=NEXT_HOP_MAC, ifindex=idx[0], state=0x80)  # NUD_PERMANENT
        ipr.neigh("replace", dst=NEXT_HOP6, lladdr=NEXT_HOP_MAC, ifindex=idx[0], state=0x80, family=AF_INET6)
        return idx[0]


def delete_device() -> None:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DEVICE)
        if idx:
            ipr.link("del", index=idx[0])


def set_route(pod_cidr: str, node_ip: str, src: str | None) -> None:
    """``pod_cidr`` (either family) through the tunnel to underlay address ``node_ip`` (IPv4);
    ``src``: the node's address of ``pod_cidr``'s family, for traffic the node originates."""
    v6 = ":" in pod_cidr
    # pyroute2 0.9.7 cannot encode LWTUNNEL_ENCAP_IP ("encap ip"), so this one route type goes
    # through iproute2.
    argv = ["ip", "-6" if v6 else "-4", "route", "replace", pod_cidr, "encap", "ip", "id", str(VNI), "dst", node_ip,
            "via", NEXT_HOP6 if v6 else NEXT_HOP, "dev", DEVICE, "onlink", "proto", str(RTPROT_NOVANET)]
    if src:
        argv += ["src", src]
    subprocess.run(argv, check=True, capture_output=True, text=True)


def delete_route(pod_cidr: str) -> None:
    with IPRoute() as ipr:
        try:
            ipr.route("del", dst=pod_cidr, proto=RTPROT_NOVANET, family=AF_INET6 if ":" in pod_cidr else AF_INET)
        except NetlinkError:
            pass


def routes() -> dict[str, str]:
    """Remote PodCIDR -> device for the routes this plugin owns."""
    out = {}
    with IPRoute() as ipr:
        for fam, host_len in ((AF_INET, 32), (AF_INET6, 128)):
            for r in ipr.get_routes(family=fam, proto=RTPROT_NOVANET):
                if r["dst_len"] < host_len and r.get_attr("RTA_DST"):
                    out[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = DEVICE
    return out
