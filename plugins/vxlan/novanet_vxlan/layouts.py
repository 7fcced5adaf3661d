"""The VXLAN programs, as the core builds them: the plugin's own per-node map (``vxlan_nodes``),
their events (the per-CPU counter array ``vxlan_stats``), C names and pins (``<bpf.root>/vxlan``).

The maps they share with the datapath (endpoints, tunnels, drops, tunnel_progs) are the core's
(:mod:`novanet_core.bpf.layouts`).
"""

from __future__ import annotations

import ctypes
import enum

from novanet_core.bpf.layouts import MapDef, Struct, u8, u32
from novanet_core.bpf.pinned import MapSpec
from novanet_core.bpf.tunnel import TunnelPrograms
from novanet_vxlan import device


class NodeKey(Struct):
    c_name = "vx_node_key"
    _fields_ = [("node_ip", u32)]  # the node key (layouts.node_key), as the shared tunnels map's


class NodeValue(Struct):
    """Per remote node over an IPv6 underlay: what the encap program needs to send the packet it
    encapsulated itself (the tunnels entry names the underlay device there, not nvx0)."""

    c_name = "vx_node"
    _fields_ = [("nexthop6", u8 * 16)]  # the underlay next hop towards the node (network order)


class Stat(enum.IntEnum):
    ENCAP = 0
    ENCAP_GSO = 1
    DECAP = 2
    DECAP_GSO = 3
    ENCAP_ERROR = 4  # no tunnels entry / set_tunnel_key or pushing the headers failed (NO_TUNNEL)
    BAD_HEADER = 5  # a frame on nvx0 without tunnel metadata
    UNTRUSTED = 6  # unknown VTEP, wrong VNI, or a known pod of another node as inner source
    NO_ENDPOINT = 7  # inner destination is not a pod on this node (NO_ROUTE)
    BAD_CONTEXT = 8  # tail call without the datapath's cb contract
    OVERSIZE_DF = 9  # too big for nvx0 with DF: handed to the node stack, which answers frag-needed
    OVERSIZE_DROP = 10  # too big without DF: dropped (MTU_EXCEEDED)
    TO_STACK = 11  # a reply from a kube-proxy Service backend: handed to the node's stack (conntrack)


NODES = MapDef(MapSpec("vxlan_nodes", "hash", ctypes.sizeof(NodeKey), ctypes.sizeof(NodeValue), 1024, 1),
               "struct vx_node_key", "struct vx_node")

PROGRAMS = TunnelPrograms(
    name="vxlan", package="novanet_vxlan", source="bpf/vxlan.c",
    encap="nv_vxlan_encap", ingress="nv_vxlan_ingress", egress="nv_vxlan_egress",
    shared=("endpoints", "endpoints_v6", "tunnels", "drops", "config", "kp_backends", "kp_backends6"), stats=Stat,
    c_prefix="VX",
    defines={"DEVICE_MAC": "{" + ", ".join(f"0x{b}" for b in device.NEXT_HOP_MAC.split(":")) + "}",
             "PORT": device.PORT, "OVERHEAD6": device.OVERHEAD6, "SPORT_MIN": device.SPORT_MIN,
             "SPORT_MAX": device.SPORT_MAX},
    maps=(NODES,), structs=(NodeKey, NodeValue),
)
