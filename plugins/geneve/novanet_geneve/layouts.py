"""The Geneve programs, as the core builds them: the plugin's own per-node map (``geneve_nodes``),
its events (the per-CPU counter array ``geneve_stats``), C constants and pins
(``<bpf.root>/geneve``).

The maps it shares with the datapath (endpoints, tunnels, config, drops, tunnel_progs) are the
core's (:mod:`novanet_core.bpf.layouts`).
"""

from __future__ import annotations

import ctypes
import enum

from novanet_core.bpf.layouts import MapDef, Struct, u8, u32
from novanet_core.bpf.pinned import MapSpec
from novanet_core.bpf.tunnel import TunnelPrograms
from novanet_geneve import wire


class NodeKey(Struct):
    c_name = "gnv_node_key"
    _fields_ = [("node_ip", u32)]  # the node key (layouts.node_key), the same key as the shared tunnels map


class NodeValue(Struct):
    """Per remote node: what the shared ``tunnels`` entry does not say (the ``nv_<node>`` state)."""

    c_name = "gnv_node"
    _fields_ = [
        ("nexthop", u32),  # underlay next hop towards the node (== node IP when on-link)
        ("pod_cidr", u32),  # the node's IPv4 PodCIDR: the only inner IPv4 sources accepted from it
        ("pod_cidr_len", u32),
        ("flags", u32),
        ("pod_cidr6", u8 * 16),  # its IPv6 PodCIDR (network order; length 0: none), the same for IPv6
        ("pod_cidr6_len", u32),
        ("nexthop6", u8 * 16),  # the underlay next hop over an IPv6 underlay (network order)
    ]


class Stat(enum.IntEnum):
    """Per-CPU event counters of the two programs (``novanetctl geneve``, metrics)."""

    ENCAP = 0  # encapsulated, non-GSO skb
    ENCAP_GSO = 1  # encapsulated GSO skb (one skb, many wire segments)
    DECAP = 2
    DECAP_GSO = 3
    ENCAP_ERROR = 4  # bpf_skb_adjust_room / store failed (drop counted as NO_TUNNEL)
    DECAP_ERROR = 5
    OVERSIZE_DF = 6  # too big with DF: handed to the node stack, which answers frag-needed
    OVERSIZE_DROP = 7  # too big without DF: dropped (MTU_EXCEEDED)
    BAD_HEADER = 8  # a UDP 6081 packet that is not our Geneve (MALFORMED)
    UNTRUSTED = 9  # unknown node, wrong VNI or a source outside the node's PodCIDR (of its family)
    NO_ENDPOINT = 10  # inner destination is not a pod on this node (NO_ROUTE)
    NO_IDENTITY_OPTION = 11  # decapsulated without our option: the endpoints map decides
    BAD_CONTEXT = 12  # tail call without the datapath's cb contract
    TO_STACK = 13  # a reply from a kube-proxy Service backend: handed to the node's stack (conntrack)


# version 2: the IPv6 PodCIDR; 3: the IPv6 next hop (an older pin is dropped and rebuilt on load)
NODES = MapDef(MapSpec("geneve_nodes", "hash", ctypes.sizeof(NodeKey), ctypes.sizeof(NodeValue), 1024, 3),
               "struct gnv_node_key", "struct gnv_node")

PROGRAMS = TunnelPrograms(
    name="geneve", package="novanet_geneve", source="bpf/geneve.c",
    encap="nv_geneve_encap", ingress="nv_geneve_ingress",
    shared=("endpoints", "endpoints_v6", "config", "tunnels", "drops", "kp_backends", "kp_backends6"), stats=Stat, c_prefix="GNV",
    defines={k: getattr(wire, k) for k in ("PORT", "ETH_P_TEB", "OPT_CLASS", "OPT_TYPE", "OPT_DATA_LEN",
                                           "OVERHEAD", "OVERHEAD6", "SPORT_MIN", "SPORT_MAX")},
    maps=(NODES,), structs=(NodeKey, NodeValue),
)
