"""The VXLAN plugin's own pinned map (counters) and where its pins live (``<bpf.root>/vxlan``).

The maps it shares with the datapath (endpoints, tunnels, drops, tunnel_progs) are the core's
(:mod:`novanet_core.bpf.layouts`).
"""

from __future__ import annotations

import enum
import os

from novanet_core.bpf import pinned
from novanet_core.bpf.layouts import MapDef
from novanet_core.bpf.pinned import MapSpec


class Stat(enum.IntEnum):
    ENCAP = 0
    ENCAP_GSO = 1
    DECAP = 2
    DECAP_GSO = 3
    ENCAP_ERROR = 4  # no tunnels entry / set_tunnel_key failed (drop counted as NO_TUNNEL)
    BAD_HEADER = 5  # a frame on nvx0 without tunnel metadata
    UNTRUSTED = 6  # unknown VTEP, wrong VNI, or a known pod of another node as inner source
    NO_ENDPOINT = 7  # inner destination is not a pod on this node (NO_ROUTE)
    BAD_CONTEXT = 8  # tail call without the datapath's cb contract
    OVERSIZE_DF = 9  # too big for nvx0 with DF: handed to the node stack, which answers frag-needed
    OVERSIZE_DROP = 10  # too big without DF: dropped (MTU_EXCEEDED)


STAT_SLOTS = 16
STATS = MapDef(MapSpec("vxlan_stats", "percpu_array", 4, 8, STAT_SLOTS, 1), "u32", "u64")
PRIVATE_MAPS = {STATS.spec.name: STATS}


def plugin_dir(root: str) -> str:
    return os.path.join(root, "vxlan")


def pin_path(root: str, name: str) -> str:
    return pinned.versioned_path(plugin_dir(root), PRIVATE_MAPS[name].spec)
