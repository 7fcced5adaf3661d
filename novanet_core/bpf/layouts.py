"""Pinned BPF map layouts that more than one plugin uses, defined ONCE, here in the core.

The eBPF datapath (``novanet-ebpf-policy``) and the tunnel plugins (``novanet-vxlan``,
``novanet-geneve``) never import each other; they meet through these definitions:

* ``endpoints`` (pod IP -> where it lives and its identity), ``tunnels`` (remote node IP -> how
  to reach it), ``config`` (node settings) and ``drops`` (per-reason drop counters) are read or
  written by both the datapath programs and the tunnel programs;
* ``tunnel_progs`` is the tail-call program array through which the datapath's from-pod program
  hands a packet for a remote pod to the active tunnel plugin (:class:`TunnelSlot`);
* the ``skb->cb`` words and the skb mark the two sides exchange are fixed here too
  (:data:`CB_ENCAP_MAGIC`, :data:`CB_DECAP_MAGIC`, :data:`TUNNEL_MARK`).

Every structure is a ctypes structure with natural alignment and explicit padding; the C structs
are generated from them by :mod:`novanet_core.bpf.layouts_c` with ``_Static_assert`` on every
size and offset, so a program compiled against a different layout does not load. Bump a map's
``version`` whenever its layout changes (the datapath migrates the old pin).

Byte orders: IPs are numeric IPv4 values (``a<<24|b<<16|c<<8|d``), as in the original NovaNet;
IPv6 addresses are 16 bytes in network order. An IPv6 pod address has its own map
(``endpoints_v6``) with the same value layout as ``endpoints`` (one identity per pod, whatever the
number of its addresses). ``node_ip`` and the ``tunnels`` key are a node's *node key*
(:func:`node_key`): its IPv4 underlay address numerically, or a 32-bit fold of its IPv6 one (an
IPv6 underlay; the entry then holds the full address, ``TunnelFlag.IPV6``).
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
from dataclasses import dataclass

from novanet_core.bpf.pinned import MapSpec

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

BPF_MAP_TYPE_PROG_ARRAY = 3


class Struct(ctypes.Structure):
    """Natural alignment with explicit padding: no implicit holes, same layout in clang."""

    c_name = ""


class EndpointKey(Struct):
    c_name = "nv_endpoint_key"
    _fields_ = [("ip", u32)]  # numeric IPv4 (a<<24|b<<16|c<<8|d), as the original NovaNet


class Endpoint6Key(Struct):
    """``endpoints_v6`` key: an IPv6 pod address, network byte order (the 16 bytes as on the wire)."""

    c_name = "nv_endpoint6_key"
    _fields_ = [("ip", u8 * 16)]


class EndpointValue(Struct):
    c_name = "nv_endpoint"
    _fields_ = [
        ("ifindex", u32),  # host-side veth; 0 for a remote endpoint
        ("mac", u8 * 6),  # pod eth0 MAC
        ("host_mac", u8 * 6),  # host-side veth MAC (ARP answers, L2 source on redirect)
        ("identity", u32),
        ("node_ip", u32),  # numeric; 0 or CONFIG[NODE_IP] = local
        ("flags", u32),  # EndpointFlag
    ]


class EndpointFlag(enum.IntFlag):
    """``endpoints[].flags`` of a local pod."""

    # The pod has a bandwidth limit (the CNI ``bandwidth`` capability, shaped by the chained
    # ``bandwidth`` plugin: a tbf on its host veth's egress, and for its egress a filter on the
    # host veth's ingress redirecting to an ifb with a tbf). Its packets, both ways, are forwarded
    # by the node's stack instead of redirected past those qdiscs (docs/datapath.md, "Bandwidth").
    SHAPED = 1


class TunnelKey(Struct):
    c_name = "nv_tunnel_key"
    _fields_ = [("node_ip", u32)]  # the remote node's node key (node_key()), as in endpoints[].node_ip


class TunnelFlag(enum.IntFlag):
    """``tunnels[].flags``."""

    IPV6 = 1  # an IPv6 underlay: the outer destination is remote_ip6 (remote_ip is 0)


class TunnelValue(Struct):
    """How to reach one remote node. Written by the active tunnel plugin (it owns the entries);
    per-node state a plugin needs beyond this lives in that plugin's own maps. Version 2 appended
    ``flags`` and ``remote_ip6`` (an entry of version 1 reads as IPv4: flags 0)."""

    c_name = "nv_tunnel"
    _fields_ = [
        ("ifindex", u32),  # device the encapsulated packet leaves by (nvx0; the underlay for geneve)
        ("remote_ip", u32),  # outer destination (the remote node's IPv4 underlay address)
        ("vni", u32),
        ("flags", u32),  # TunnelFlag
        ("remote_ip6", u8 * 16),  # outer destination over an IPv6 underlay (network order)
    ]


# FNV-1a (32 bit) over the 16 bytes of an IPv6 node address: the node key of an IPv6 underlay
# node. A hash rather than, say, the address's last 32 bits, because node addresses in different
# subnets often share those; a collision between two nodes is detected by the tunnel plugin
# (novanet_core.bpf.tunnel.entries) and the later node is refused, and the tunnel programs
# compare the entry's full address with the outer source before trusting a packet.
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


def node_key(ip: str) -> int:
    """The u32 a node is known by in the shared maps (``endpoints[].node_ip``, the ``tunnels``
    and plugin per-node keys): an IPv4 address numerically (as the original NovaNet); an IPv6
    address FNV-1a-folded, never 0 (0 means "this node" in ``endpoints``). The C twin is
    ``nv_node_key6`` (:func:`novanet_core.bpf.layouts_c.node_key_c`)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return int(addr)
    h = FNV_OFFSET
    for b in addr.packed:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h or 1


class KpBackendKey(Struct):
    """kube-proxy compatibility (``kubeProxyReplacement: false``): a Service backend address.

    Replies from these addresses carry kube-proxy's DNAT in the kernel's conntrack, so they must
    cross the node's stack instead of being redirected past it (the tunnel ingress programs check
    this set; the datapath tells same-node flows apart from its own flow table)."""

    c_name = "nv_kp_backend_key"
    _fields_ = [("ip", u32), ("port", u16), ("protocol", u8), ("pad", u8)]


class KpBackend6Key(Struct):
    """``kp_backends6`` key: :class:`KpBackendKey` for an IPv6 Service backend (the address in
    network byte order, the 16 bytes as on the wire); the value is a :class:`KpBackendValue`."""

    c_name = "nv_kp_backend6_key"
    _fields_ = [("ip", u8 * 16), ("port", u16), ("protocol", u8), ("pad", u8)]


class KpBackendValue(Struct):
    c_name = "nv_kp_backend"
    _fields_ = [("flags", u32)]


class DropReason(enum.IntEnum):
    """Reason codes of the shared ``drops`` counter map and of flow events."""

    NONE = 0
    POLICY_DENIED = 1  # no rule allowed it (default deny / isolated), like Cilium 133
    NO_IDENTITY = 2  # source not in the endpoint map (spoofed, stale or unknown)
    NO_ROUTE = 3  # destination in the cluster CIDR (overlay) / this PodCIDR, but no such endpoint
    NO_TUNNEL = 4  # remote endpoint but no tunnel to its node (no entry, no tunnel program, encap failed)
    TTL_EXCEEDED = 5
    RATE_LIMITED = 6  # reserved (original NovaNet code)
    POLICY_DENY_RULE = 7  # an explicit deny entry matched, like Cilium 181
    MALFORMED = 8  # truncated L3/L4 header; a tunnel header that does not parse
    TUNNEL_UNTRUSTED = 9  # tunnel packet from an unknown node, wrong VNI, or an inner source it does not own
    MTU_EXCEEDED = 10  # too big to encapsulate (pod MTU larger than underlay MTU - overhead)
    FLOW_TABLE_FULL = 11  # a new flow the flow table (ct) had no room for: dropped, never let through untracked
    NO_SERVICE_BACKEND = 12  # a Service frontend with no ready backend: answered at once (RST / ICMP / ECONNREFUSED)
    POLICY_MAP_FULL = 13  # the endpoint's NetworkPolicy did not fit the policy maps: failed closed until it does
    SERVICE_MAP_FULL = 14  # a Service frontend whose backends did not fit the service maps: refused until they do


DROP_SLOTS = 16  # per-CPU drop counter slots: room for more reasons


class ConfigKey(enum.IntEnum):
    """CONFIG map keys (u32 → u64), the original NovaNet numbering plus 11+."""

    MODE = 0  # 0 overlay, 1 native
    TUNNEL_TYPE = 1  # 0 geneve, 1 vxlan
    NODE_IP = 2
    CLUSTER_CIDR_IP = 3
    CLUSTER_CIDR_PREFIX_LEN = 4
    DEFAULT_DENY = 5
    MASQUERADE_ENABLED = 6
    SNAT_IP = 7
    POD_CIDR_IP = 8
    POD_CIDR_PREFIX_LEN = 9
    L4LB_ENABLED = 10
    GATEWAY_IP = 11
    POLICY_REVISION = 12  # bumped on every policy change; flows re-evaluate when it differs
    POLICY_COUNT = 13  # entries in the policies map; 0 lets programs skip the 9 probes
    KP_BACKENDS = 14  # entries in kp_backends (kube-proxy compatibility); 0 lets programs skip the lookup
    SERVICE_CIDR_IP = 15  # where ClusterIPs come from: only those (and the node IP) can be frontends
    SERVICE_CIDR_PREFIX_LEN = 16
    # IPv6 node facts, each address in two slots (high and low 64 bits of the network-order value)
    NODE_IP6_HI = 17
    NODE_IP6_LO = 18
    GATEWAY_IP6_HI = 19
    GATEWAY_IP6_LO = 20
    SERVICES_UNPROGRAMMED = 21  # frontends the services map had no room for: their serviceCIDR addresses are refused
    # The cluster's IPv6 range (clusterCIDR's IPv6 entry): network in two slots as above, and its length
    CLUSTER_CIDR6_HI = 22
    CLUSTER_CIDR6_LO = 23
    CLUSTER_CIDR6_PREFIX_LEN = 24
    # serviceCIDR's IPv6 range, the same way (kube-proxy mode: egress decided after its DNAT; the
    # datapath's load-balancer: only its addresses and the node's are IPv6 frontends per packet)
    SERVICE_CIDR6_HI = 25
    SERVICE_CIDR6_LO = 26
    SERVICE_CIDR6_PREFIX_LEN = 27
    KP_BACKENDS6 = 28  # entries in kp_backends6 (KP_BACKENDS' IPv6 twin)


CONFIG_SLOTS = 32


class TunnelSlot(enum.IntEnum):
    """Slots of the ``tunnel_progs`` program array (owned by the active tunnel plugin)."""

    ENCAP = 0  # from-pod, destination is a remote endpoint: encapsulate and send to its node


TUNNEL_SLOTS = 4

# The tail-call contract, from-pod -> tunnel_progs[ENCAP] (tail calls keep skb->cb):
#   cb[0] = CB_ENCAP_MAGIC, cb[1] = source identity, cb[2] = destination identity,
#   cb[3] = destination node key (node_key(); the tunnels key). The packet is IPv4 or IPv6 (the
#   Ethernet type says which); the underlay family is the tunnels entry's (TunnelFlag.IPV6). The datapath has already checked that
#   a tunnels entry exists. An empty slot makes the tail call fall through: the datapath drops
#   NO_TUNNEL. The tunnel program returns the verdict (redirect / TC_ACT_SHOT).
CB_ENCAP_MAGIC = 0x4E564531  # "NVE1"
# Tunnel ingress -> to-pod (bpf_redirect to the host veth's egress keeps skb->cb and the mark):
#   mark |= TUNNEL_MARK, cb[0] = CB_DECAP_MAGIC, cb[1] = the source identity the sender stamped,
#   cb[2] = the inner source IP (numeric; of an IPv6 source, its last 4 bytes read as a numeric
#   IPv4 address), cb[3] = ifindex the tunnel packet was received on.
# The to-pod program honours cb[1] only when all four hold for the packet it sees
# (skb->ingress_ifindex == cb[3], saddr == cb[2]) and clears cb[0] after reading it.
CB_DECAP_MAGIC = 0x4E564431  # "NVD1"
TUNNEL_MARK = 0x4000  # on every packet arriving through a tunnel (the guide's KUBE-FORWARD accept rule)
# On a pod's packet the datapath hands to the node's stack when it is a reply of a connection
# made *to* the pod: the forward direction bypassed conntrack (redirected by BPF), so conntrack
# would take the reply for a new outbound connection and the egress masquerade would rewrite it.
# The masquerade rule skips packets carrying it (novanet_core.agent.masquerade).
REPLY_MARK = 0x40000


@dataclass(frozen=True)
class ProgArraySpec(MapSpec):
    """A BPF_MAP_TYPE_PROG_ARRAY pin (the generic MapSpec table does not list that type)."""

    @property
    def type_id(self) -> int:
        return BPF_MAP_TYPE_PROG_ARRAY


@dataclass(frozen=True)
class MapDef:
    spec: MapSpec
    key: str  # C type
    value: str


def _sz(t: type[ctypes._SimpleCData] | type[Struct]) -> int:
    return ctypes.sizeof(t)


ENDPOINTS = MapDef(MapSpec("endpoints", "hash", _sz(EndpointKey), _sz(EndpointValue), 65536, 1),
                   "struct nv_endpoint_key", "struct nv_endpoint")
ENDPOINTS_V6 = MapDef(MapSpec("endpoints_v6", "hash", _sz(Endpoint6Key), _sz(EndpointValue), 65536, 1),
                      "struct nv_endpoint6_key", "struct nv_endpoint")
CONFIG = MapDef(MapSpec("config", "array", 4, 8, CONFIG_SLOTS, 1), "u32", "u64")
# version 2: TunnelValue.flags and remote_ip6 (an IPv6 underlay)
TUNNELS = MapDef(MapSpec("tunnels", "hash", _sz(TunnelKey), _sz(TunnelValue), 1024, 2),
                 "struct nv_tunnel_key", "struct nv_tunnel")
DROPS = MapDef(MapSpec("drops", "percpu_array", 4, 8, DROP_SLOTS, 1), "u32", "u64")
TUNNEL_PROGS = MapDef(ProgArraySpec("tunnel_progs", "prog_array", 4, 4, TUNNEL_SLOTS, 1), "u32", "u32")
KP_BACKENDS = MapDef(MapSpec("kp_backends", "hash", _sz(KpBackendKey), _sz(KpBackendValue), 65536, 1),
                     "struct nv_kp_backend_key", "struct nv_kp_backend")
KP_BACKENDS6 = MapDef(MapSpec("kp_backends6", "hash", _sz(KpBackend6Key), _sz(KpBackendValue), 65536, 1),
                      "struct nv_kp_backend6_key", "struct nv_kp_backend")

SHARED_MAPS: dict[str, MapDef] = {m.spec.name: m for m in (ENDPOINTS, ENDPOINTS_V6, CONFIG, TUNNELS, DROPS,
                                                          TUNNEL_PROGS, KP_BACKENDS, KP_BACKENDS6)}
SHARED_STRUCTS: tuple[type[Struct], ...] = (EndpointKey, Endpoint6Key, EndpointValue, TunnelKey, TunnelValue, KpBackendKey,
                                            KpBackend6Key, KpBackendValue)
