"""Every map key/value and the flow event, defined ONCE as ctypes structures.

The C program never declares these itself: :func:`c_header` generates the C structs (with
``_Static_assert`` on every size and offset, so clang refuses a layout that differs from what
Python reads), the map declarations with their versioned pin paths, and the constants. Bump a
map's ``version`` whenever its layout changes; :mod:`.maps` then migrates the old pin.
"""

from __future__ import annotations

import ctypes
import enum

# Shared with the tunnel plugins, so defined once in the core (novanet_core.bpf.layouts):
# endpoints, config, tunnels, drops, tunnel_progs and their keys, values and codes.
from novanet_core.bpf import layouts_c
from novanet_core.bpf.layouts import (  # noqa: F401  (re-exported for this plugin's modules)
    CONFIG,
    CONFIG_SLOTS,
    DROP_SLOTS,
    DROPS,
    ENDPOINTS,
    ENDPOINTS_V6,
    KP_BACKENDS,
    KP_BACKENDS6,
    TUNNEL_PROGS,
    TUNNELS,
    ConfigKey,
    DropReason,
    Endpoint6Key,
    EndpointFlag,
    EndpointKey,
    EndpointValue,
    KpBackend6Key,
    KpBackendKey,
    KpBackendValue,
    MapDef,
    ProgArraySpec,
    TunnelKey,
    TunnelValue,
    node_key,
)
from novanet_core.bpf.layouts import Struct as _S
from novanet_core.bpf.pinned import MapSpec

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class PolicyKey(_S):
    c_name = "nv_policy_key"
    _fields_ = [("src_identity", u32), ("dst_identity", u32), ("protocol", u8), ("pad", u8), ("dst_port", u16)]


class PolicyValue(_S):
    c_name = "nv_policy"
    _fields_ = [("action", u8), ("pad", u8 * 3)]


class PolicyRuleKey(_S):
    """NetworkPolicy rule entry: an LPM-trie key over (set, peer kind, peer, protocol, port).

    ``data`` bytes are big-endian so that the trie's MSB-first prefix covers, in order: the policy
    set (a direction's compiled rules, 32 bits), the peer kind (8), the peer (identity or CIDR id,
    32), then optionally the protocol (8) and a prefix of the destination port (0..16). A port range
    is decomposed into at most 30 aligned port prefixes; "any protocol, any port" stops at 72 bits.
    Python packs it with :data:`novanet_ebpf_policy.policymap.RULE_KEY` (checked against this).
    """

    c_name = "nv_prule_key"
    _fields_ = [("prefixlen", u32), ("set_id", u8 * 4), ("kind", u8), ("peer", u8 * 4), ("protocol", u8),
                ("port", u8 * 2)]


class PolicyRuleValue(_S):
    c_name = "nv_prule"
    _fields_ = [("rule_ref", u32)]  # hash of "policy origin": names the rule that allowed a flow


class PolicyCidrKey(_S):
    """ipBlock prefixes (IPv4, network byte order): LPM from an address to its CIDR id."""

    c_name = "nv_pcidr_key"
    _fields_ = [("prefixlen", u32), ("ip", u8 * 4)]


class PolicyCidr6Key(_S):
    """ipBlock prefixes (IPv6, network byte order): LPM from an address to its CIDR id."""

    c_name = "nv_pcidr6_key"
    _fields_ = [("prefixlen", u32), ("ip", u8 * 16)]


class PolicyCidrValue(_S):
    c_name = "nv_pcidr"
    _fields_ = [("cidr_id", u32)]


class EndpointPolicyValue(_S):
    """Per local endpoint (keyed like ``endpoints``): the policy set of each direction."""

    c_name = "nv_ep_policy"
    _fields_ = [("ingress_set", u32), ("egress_set", u32), ("flags", u32), ("pad", u32)]






class EgressKey(_S):
    """Traffic leaving the cluster: an LPM-trie key over (source identity, destination prefix).

    ``data`` is big-endian so the trie's MSB-first prefix is the identity (32 bits, always whole)
    then the first ``prefixlen - 32`` bits of the destination. Identity 0 = any source.
    Python packs it with :data:`novanet_ebpf_policy.egressmap.KEY` (checked against this).
    """

    c_name = "nv_egress_key"
    _fields_ = [("prefixlen", u32), ("src_identity", u8 * 4), ("dst_ip", u8 * 4)]


class EgressValue(_S):
    c_name = "nv_egress"
    _fields_ = [("action", u8),  # EgressAction
                ("flags", u8),  # EgressFlag
                ("pad", u16),
                ("rule", u32),  # slot in egress_stats (per-rule packet/byte counters)
                ("snat_ip", u32)]  # SNAT: the source address the node rewrites to (network order)


class Counter(_S):
    """Per-CPU packets and bytes (``traffic`` and ``egress_stats`` slots)."""

    c_name = "nv_counter"
    _fields_ = [("packets", u64), ("bytes", u64)]


class FlowKey(_S):
    """Conntrack-lite key: one entry per direction of a flow (numeric IPs, host-order ports)."""

    c_name = "nv_flow_key"
    _fields_ = [("src_ip", u32), ("dst_ip", u32), ("src_port", u16), ("dst_port", u16), ("protocol", u8),
                ("pad", u8 * 3)]


class Flow6Key(_S):
    """``ct6``: the IPv6 flow table's key, as :class:`FlowKey` with 16-byte network-order addresses."""

    c_name = "nv_flow6_key"
    _fields_ = [("src_ip", u8 * 16), ("dst_ip", u8 * 16), ("src_port", u16), ("dst_port", u16), ("protocol", u8),
                ("pad", u8 * 3)]


class FlowState(_S):
    """v3 adds what the established-flow fast path needs without the source's endpoint lookup: the
    veth packets of this direction must come in on (0 = not a from-pod direction: never fast) and
    the identity of their source. v4 adds the same for the destination's endpoint lookup: where a
    same-node destination's packets go (its host veth, 0 = not cached: look the endpoint up) and
    the L2 rewrite (pod MAC, then host veth MAC). The entry is written when the flow is decided;
    the dataplane bumps the policy revision whenever a local endpoint goes or changes its veth or
    MACs, so no entry outlives the endpoint it copied."""

    c_name = "nv_flow_state"
    _fields_ = [("last_seen_ns", u64), ("policy_revision", u32), ("flags", u32), ("ifindex", u32),
                ("identity", u32), ("dst_ifindex", u32), ("dst_mac", u8 * 12)]  # mac, host_mac


# ------------------------------------------------------------------ Services (load-balancer)
# A frontend (ClusterIP:port or node IP:nodePort, protocol) points at a *bank* of backend slots;
# every backend change writes a new bank and then swaps the frontend's bank id, so a program
# never sees half a backend list. Slots 0..count-1 may take new connections; count..total-1 are
# terminating backends (listed, picked by no new connection).


class ServiceKey(_S):
    c_name = "nv_svc_key"
    _fields_ = [("ip", u32), ("port", u16), ("protocol", u8), ("pad", u8)]


class ServiceValue(_S):
    c_name = "nv_svc"
    _fields_ = [
        ("id", u32),  # frontend id: stable while the frontend exists (affinity, metadata)
        ("bank", u32),  # backends are keyed (bank, slot); a new bank on every backend change
        ("count", u16),  # selectable backends (ready, not terminating)
        ("total", u16),  # count + terminating ones
        ("flags", u16),  # SvcFlag
        ("pad", u16),
        ("affinity_timeout", u32),  # seconds of sessionAffinity: ClientIP (flag AFFINITY)
        ("pad2", u32),
    ]


class BackendKey(_S):
    c_name = "nv_lb_slot"
    _fields_ = [("bank", u32), ("slot", u32)]


class BackendValue(_S):
    c_name = "nv_lb_backend"
    _fields_ = [("ip", u32), ("port", u16), ("flags", u8), ("pad", u8)]  # flags: BackendFlag


class MemberKey(_S):
    """Is backend ip:port still selectable in this bank? (a pinned client keeps it while it is)"""

    c_name = "nv_lb_member_key"
    _fields_ = [("bank", u32), ("ip", u32), ("port", u16), ("pad", u16)]


class MemberValue(_S):
    c_name = "nv_lb_member"
    _fields_ = [("slot", u32)]


class ServiceMeta(_S):
    """Per frontend id: what the frontend is, for ``service list`` read back from the maps."""

    c_name = "nv_svc_meta"
    _fields_ = [("kind", u8), ("pad", u8 * 3), ("key", u8 * 188)]  # key: ServiceFrontend.key, NUL-padded


class NatValue(_S):
    """Per-packet translation of one direction of a flow (``revnat``, keyed by FlowKey as the
    packet arrives): rewrite the addresses and ports to these. FORWARD entries turn a client's
    packet into the backend's tuple (the flow table then sees the translated packet); REVERSE
    entries turn a backend's reply back into what the client sent to."""

    c_name = "nv_nat"
    _fields_ = [
        ("saddr", u32),
        ("daddr", u32),
        ("sport", u16),
        ("dport", u16),
        ("flags", u16),  # NatFlag
        ("pad", u16),
        ("svc_id", u32),
        ("pad2", u32),
        ("last_ns", u64),  # refreshed at most once a second; UDP/SCTP forward entries expire idle
    ]


class SockNatKey(_S):
    """Socket-level translation: the backend a socket was connected/sent to, by socket cookie."""

    c_name = "nv_sock_nat_key"
    _fields_ = [("cookie", u64), ("ip", u32), ("port", u16), ("protocol", u8), ("pad", u8)]


class SockNatValue(_S):
    c_name = "nv_sock_nat"
    _fields_ = [("ip", u32), ("port", u16), ("pad", u16)]  # the frontend the application asked for


class AffinityKey(_S):
    """sessionAffinity: ClientIP. ``client`` is the client IP on the per-packet path and the
    client's network-namespace cookie (one pod, one IP) with bit 63 set on the socket path."""

    c_name = "nv_aff_key"
    _fields_ = [("svc_id", u32), ("pad", u32), ("client", u64)]


class AffinityValue(_S):
    c_name = "nv_aff"
    _fields_ = [("ip", u32), ("port", u16), ("pad", u16), ("last_ns", u64)]


# IPv6 frontends: the same model with 16-byte network-order addresses (the value of a frontend
# (``nv_svc``), the slot key and ``service_meta`` are shared; ids and banks are unique over both
# families).


class Service6Key(_S):
    c_name = "nv_svc6_key"
    _fields_ = [("ip", u8 * 16), ("port", u16), ("protocol", u8), ("pad", u8)]


class Backend6Value(_S):
    c_name = "nv_lb_backend6"
    _fields_ = [("ip", u8 * 16), ("port", u16), ("flags", u8), ("pad", u8)]  # flags: BackendFlag


class Member6Key(_S):
    c_name = "nv_lb_member6_key"
    _fields_ = [("bank", u32), ("ip", u8 * 16), ("port", u16), ("pad", u16)]


class SockNat6Key(_S):
    c_name = "nv_sock_nat6_key"
    _fields_ = [("cookie", u64), ("ip", u8 * 16), ("port", u16), ("protocol", u8), ("pad", u8), ("pad2", u32)]


class SockNat6Value(_S):
    c_name = "nv_sock_nat6"
    _fields_ = [("ip", u8 * 16), ("port", u16), ("pad", u16)]


class Affinity6Value(_S):
    c_name = "nv_aff6"
    _fields_ = [("ip", u8 * 16), ("port", u16), ("pad", u16), ("pad2", u32), ("last_ns", u64)]


class Nat6Value(_S):
    """``revnat6``: :class:`NatValue` for an IPv6 flow (keyed by :class:`Flow6Key` as the packet
    arrives), 16-byte network-order addresses."""

    c_name = "nv_nat6"
    _fields_ = [
        ("saddr", u8 * 16),
        ("daddr", u8 * 16),
        ("sport", u16),
        ("dport", u16),
        ("flags", u16),  # NatFlag
        ("pad", u16),
        ("svc_id", u32),
        ("pad2", u32),
        ("last_ns", u64),
    ]


class Svc6Scratch(_S):
    """``svc6_scratch`` (per-CPU, one entry): room for what bpf/services6.c builds for a new IPv6
    translation or a refusal (its ``struct nv_svc6_work``, checked to fit), kept off the stack."""

    c_name = "nv_svc6_scratch"
    _fields_ = [("buf", u64 * 48)]


class FlowEvent(_S):
    """Ring-buffer record (80 B, the original NovaNet layout; ``hook`` uses its spare byte 13)."""

    c_name = "nv_flow_event"
    _fields_ = [
        ("family", u8),  # 2 = IPv4, 10 = IPv6 (AF_INET, AF_INET6)
        ("verdict", u8),  # Verdict
        ("drop_reason", u8),  # DropReason
        ("tcp_flags", u8),  # byte 13 of the TCP header
        ("src_identity", u32),
        ("dst_identity", u32),
        ("protocol", u8),
        ("hook", u8),  # Hook: which program saw it
        ("src_port", u16),  # host order
        ("dst_port", u16),
        ("policy_dir", u8),  # PolicyDir: which side's NetworkPolicy denied it (POLICY_DENIED)
        ("pad", u8),
        ("src_ip", u8 * 16),  # network order: IPv4 in the first 4 bytes, or the IPv6 address
        ("dst_ip", u8 * 16),
        ("policy_set", u32),  # the policy set that denied it (0 = none)
        ("bytes", u64),  # IP total length
        ("packets", u64),
        ("timestamp_ns", u64),  # bpf_ktime_get_ns (CLOCK_MONOTONIC)
    ]


STRUCTS: tuple[type[_S], ...] = (EndpointKey, Endpoint6Key, EndpointValue, PolicyKey, PolicyValue, PolicyRuleKey,
                                 PolicyRuleValue, PolicyCidrKey, PolicyCidr6Key, PolicyCidrValue, EndpointPolicyValue,
                                 TunnelKey, TunnelValue, EgressKey, EgressValue, Counter, FlowKey, Flow6Key, FlowState,
                                 FlowEvent,
                                 KpBackendKey, KpBackend6Key, KpBackendValue, ServiceKey, ServiceValue, BackendKey, BackendValue,
                                 MemberKey, MemberValue, ServiceMeta, NatValue, SockNatKey, SockNatValue,
                                 AffinityKey, AffinityValue, Service6Key, Backend6Value, Member6Key, SockNat6Key,
                                 SockNat6Value, Affinity6Value, Nat6Value, Svc6Scratch)





class Verdict(enum.IntEnum):
    ALLOW = 1
    DENY = 2


class Hook(enum.IntEnum):
    FROM_POD = 0
    TO_POD = 1
    FROM_NETWORK = 2  # the node's underlay interface (NodePort from outside the node)


class PolicyDir(enum.IntEnum):
    NONE = 0
    EGRESS = 1  # the source pod's egress policy
    INGRESS = 2  # the destination pod's ingress policy
    DEFAULT = 3  # defaultDeny with no compiled policy for that endpoint yet


class PeerKind(enum.IntEnum):
    ANY = 0
    IDENTITY = 1
    CIDR = 2


class EpPolicyFlag(enum.IntFlag):
    INGRESS_ISOLATED = 1
    EGRESS_ISOLATED = 2
    UNPROGRAMMED = 4  # its policy did not fit the policy maps: everything dropped (POLICY_MAP_FULL)


class CtFlag(enum.IntFlag):
    REPLY = 1  # the entry is the reverse of the packet that created the flow
    SVC = 2  # a REPLY entry of a flow the load-balancer translated: revnat holds its reverse rewrite
    VIA_STACK = 4  # the flow crossed the node's stack (kube-proxy DNAT): keep its packets on it
    SHAPED = 8  # an end of the flow is a pod with a bandwidth limit (EndpointFlag.SHAPED): full path
    # the forward entry of a flow translated per packet here: its packets arrive addressed to the
    # frontend; one that arrives addressed to the backend is another flow on a reused tuple
    SVC_FWD = 16


class SvcFlag(enum.IntFlag):
    NODEPORT = 1  # kind NodePort (ip is the node's address)
    EXTERNAL_LOCAL = 2  # externalTrafficPolicy: Local: keep the client's address (no SNAT)
    AFFINITY = 4  # sessionAffinity: ClientIP
    UNPROGRAMMED = 8  # its backends did not fit the service maps: refused (SERVICE_MAP_FULL) until they do


class BackendFlag(enum.IntFlag):
    READY = 1
    SERVING = 2
    TERMINATING = 4
    LOCAL = 8


class NatFlag(enum.IntFlag):
    FORWARD = 1  # client -> backend: the flow table keys the rewritten packet
    REVERSE = 2  # backend -> client: the flow table keys the packet as it arrived
    SNAT = 4  # the client's address was replaced (NodePort Cluster, hairpin)
    OUT = 8  # after the rewrite the packet leaves the node by a FIB lookup (its source is ours)


class FrontendKind(enum.IntEnum):
    CLUSTER_IP = 0
    NODE_PORT = 1


class SvcStat(enum.IntEnum):
    """``svcstats`` (per-CPU): translations by where they happened."""

    SOCKET = 0  # connect4/sendmsg4 rewrote the destination
    PACKET = 1  # a new flow translated per packet (from-pod)
    NODEPORT = 2  # a new flow from outside the node (underlay ingress)
    REVERSE_SOCKET = 3  # recvmsg4/getpeername4 restored the frontend address
    SOCKET6 = 4  # connect6/sendmsg6 rewrote an IPv6 destination
    REVERSE_SOCKET6 = 5  # recvmsg6/getpeername6 restored an IPv6 frontend address
    PACKET6 = 6  # a new IPv6 flow translated per packet (from-pod)
    NODEPORT6 = 7  # a new IPv6 flow from outside the node (underlay ingress)


class Action(enum.IntEnum):
    DENY = 0
    ALLOW = 1





class EgressAction(enum.IntEnum):
    DENY = 0
    ALLOW = 1
    SNAT = 2  # allowed, and the node rewrites the source to snat_ip


class EgressFlag(enum.IntFlag):
    PORTS = 1  # allowed on some ports only: the pod's NetworkPolicy set decides the port
    DEFAULT = 2  # the any-source entry: NetworkPolicy (isolation, defaultDeny fallback) still decides


class TrafficCode(enum.IntEnum):
    """Slot within a direction of the ``traffic`` map; drop reasons use their own code (1..15)."""

    FORWARDED = 0
    NEW_FLOW = 16  # a connection the datapath admitted (policy verdict "allowed")


TRAFFIC_CODES = 32  # slots per direction (hook): slot = hook * TRAFFIC_CODES + code
EGRESS_RULES = 16384


class FlowStat(enum.IntEnum):
    SUBMITTED = 0
    LOST = 1  # bpf_ringbuf_reserve failed: the consumer fell behind
    NEW_FLOWS = 2


FLOW_STAT_SLOTS = 4
SVC_STAT_SLOTS = 8
SERVICES_MAX = 65536
BACKENDS_MAX = 262144  # slots of every live bank (a frontend briefly holds two while it changes)
REVNAT_MAX = 262144  # two entries per translated flow
SCTP_CRC_SLOTS = 65536  # x^(32+8n) mod P for every SCTP packet length n+4 (see bpf/services.c)
CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial (SCTP, RFC 9260 appendix A)


def _times_x(v: int) -> int:
    return (v >> 1) ^ CRC32C_POLY if v & 1 else v >> 1


def sctp_crc_powers(n: int = SCTP_CRC_SLOTS) -> list[int]:
    """x^(32+8i) mod P for i < n, reflected (bit 31 is x^0): what ``sctp_crc`` holds."""
    out = []
    v = _times_x(1)  # 1 is x^31 reflected; times x is x^32
    for _ in range(n):
        out.append(v)
        for _ in range(8):
            v = _times_x(v)
    return out
BPF_F_NO_PREALLOC = 1  # required by LPM tries
POLICY_RULES_MAX = 1 << 20  # trie nodes are allocated per entry; this is only a cap
RULE_KEY_BITS = 96  # PolicyRuleKey data: set 32 + kind 8 + peer 32 + protocol 8 + port 16
RINGBUF_PAGES = 2048  # 8 MiB: ~116 k events of burst headroom



def _sz(t: type[ctypes._SimpleCData] | type[_S]) -> int:
    return ctypes.sizeof(t)


MAPS: dict[str, MapDef] = {
    m.spec.name: m
    for m in (
        ENDPOINTS,  # shared (core)
        ENDPOINTS_V6,  # shared (core)
        MapDef(MapSpec("policies", "hash", _sz(PolicyKey), _sz(PolicyValue), 65536, 1),
               "struct nv_policy_key", "struct nv_policy"),
        MapDef(MapSpec("policy_rules", "lpm_trie", _sz(PolicyRuleKey), _sz(PolicyRuleValue), POLICY_RULES_MAX, 1,
                       BPF_F_NO_PREALLOC), "struct nv_prule_key", "struct nv_prule"),
        MapDef(MapSpec("policy_cidrs", "lpm_trie", _sz(PolicyCidrKey), _sz(PolicyCidrValue), 65536, 1,
                       BPF_F_NO_PREALLOC), "struct nv_pcidr_key", "struct nv_pcidr"),
        MapDef(MapSpec("policy_cidrs_v6", "lpm_trie", _sz(PolicyCidr6Key), _sz(PolicyCidrValue), 65536, 1,
                       BPF_F_NO_PREALLOC), "struct nv_pcidr6_key", "struct nv_pcidr"),
        MapDef(MapSpec("ep_policy", "hash", _sz(EndpointKey), _sz(EndpointPolicyValue), 65536, 1),
               "struct nv_endpoint_key", "struct nv_ep_policy"),
        # an IPv6 address of a local pod: the same value as its IPv4 address's (one set per direction)
        MapDef(MapSpec("ep_policy_v6", "hash", _sz(Endpoint6Key), _sz(EndpointPolicyValue), 65536, 1),
               "struct nv_endpoint6_key", "struct nv_ep_policy"),
        CONFIG,  # shared (core)
        TUNNELS,  # shared (core)
        TUNNEL_PROGS,  # shared (core): the tunnel plugin's tail-call slots
        MapDef(MapSpec("egress", "lpm_trie", _sz(EgressKey), _sz(EgressValue), EGRESS_RULES, 2, BPF_F_NO_PREALLOC),
               "struct nv_egress_key", "struct nv_egress"),
        MapDef(MapSpec("egress_stats", "percpu_array", 4, _sz(Counter), EGRESS_RULES, 1), "u32", "struct nv_counter"),
        MapDef(MapSpec("traffic", "percpu_array", 4, _sz(Counter), 2 * TRAFFIC_CODES, 1), "u32", "struct nv_counter"),
        DROPS,  # shared (core)
        # Plain hash, not LRU: full means new flows are dropped (FLOW_TABLE_FULL), never that
        # established ones are evicted (novanet_ebpf_policy/flowtable.py). Size: bpf.flowTableSize.
        MapDef(MapSpec("ct", "hash", _sz(FlowKey), _sz(FlowState), 65536, 4),
               "struct nv_flow_key", "struct nv_flow_state"),
        # IPv6 flows, same rules and size (bpf.flowTableSize)
        MapDef(MapSpec("ct6", "hash", _sz(Flow6Key), _sz(FlowState), 65536, 1),
               "struct nv_flow6_key", "struct nv_flow_state"),
        MapDef(MapSpec("flowstats", "percpu_array", 4, 8, FLOW_STAT_SLOTS, 1), "u32", "u64"),
        MapDef(MapSpec("flows", "ringbuf", 0, 0, RINGBUF_PAGES * 4096, 1), "int", "u32"),
        KP_BACKENDS,  # shared (core): read by the tunnel ingress programs too
        KP_BACKENDS6,  # the same for IPv6 backends
        MapDef(MapSpec("services", "hash", _sz(ServiceKey), _sz(ServiceValue), SERVICES_MAX, 1),
               "struct nv_svc_key", "struct nv_svc"),
        MapDef(MapSpec("backends", "hash", _sz(BackendKey), _sz(BackendValue), BACKENDS_MAX, 1),
               "struct nv_lb_slot", "struct nv_lb_backend"),
        MapDef(MapSpec("lb_members", "hash", _sz(MemberKey), _sz(MemberValue), BACKENDS_MAX, 1),
               "struct nv_lb_member_key", "struct nv_lb_member"),
        MapDef(MapSpec("service_meta", "hash", 4, _sz(ServiceMeta), SERVICES_MAX, 1, BPF_F_NO_PREALLOC),
               "u32", "struct nv_svc_meta"),
        MapDef(MapSpec("revnat", "lru_hash", _sz(FlowKey), _sz(NatValue), REVNAT_MAX, 1),
               "struct nv_flow_key", "struct nv_nat"),
        MapDef(MapSpec("sock_revnat", "lru_hash", _sz(SockNatKey), _sz(SockNatValue), 65536, 1),
               "struct nv_sock_nat_key", "struct nv_sock_nat"),
        MapDef(MapSpec("affinity", "lru_hash", _sz(AffinityKey), _sz(AffinityValue), 65536, 1),
               "struct nv_aff_key", "struct nv_aff"),
        # IPv6 frontends (socket level): sized like their IPv4 maps (bpf.serviceMapSize)
        MapDef(MapSpec("services6", "hash", _sz(Service6Key), _sz(ServiceValue), SERVICES_MAX, 1),
               "struct nv_svc6_key", "struct nv_svc"),
        MapDef(MapSpec("backends6", "hash", _sz(BackendKey), _sz(Backend6Value), BACKENDS_MAX, 1),
               "struct nv_lb_slot", "struct nv_lb_backend6"),
        MapDef(MapSpec("lb_members6", "hash", _sz(Member6Key), _sz(MemberValue), BACKENDS_MAX, 1),
               "struct nv_lb_member6_key", "struct nv_lb_member"),
        MapDef(MapSpec("sock_revnat6", "lru_hash", _sz(SockNat6Key), _sz(SockNat6Value), 65536, 1),
               "struct nv_sock_nat6_key", "struct nv_sock_nat6"),
        MapDef(MapSpec("affinity6", "lru_hash", _sz(AffinityKey), _sz(Affinity6Value), 65536, 1),
               "struct nv_aff_key", "struct nv_aff6"),
        # IPv6 per-packet translations (from-pod, NodePort from the underlay), as revnat
        MapDef(MapSpec("revnat6", "lru_hash", _sz(Flow6Key), _sz(Nat6Value), REVNAT_MAX, 1),
               "struct nv_flow6_key", "struct nv_nat6"),
        # ipv6_progs[0]: nv_from_pod6_prog, a pod's IPv6 packet (nv_from_pod tail-calls it; bpf/datapath6.c)
        MapDef(ProgArraySpec("ipv6_progs", "prog_array", 4, 4, 1, 1), "u32", "u32"),
        MapDef(MapSpec("svc6_scratch", "percpu_array", 4, _sz(Svc6Scratch), 1, 1), "u32", "struct nv_svc6_scratch"),
        MapDef(MapSpec("svcstats", "percpu_array", 4, 8, SVC_STAT_SLOTS, 1), "u32", "u64"),
        MapDef(MapSpec("sctp_crc", "array", 4, 4, SCTP_CRC_SLOTS, 1), "u32", "u32"),
    )
}

# One C generator for every layout (core and plugin): the plugin's structs share the core's shape.
c_struct = layouts_c.c_struct
_enum_defines = layouts_c.enum_defines


def c_header(pin_paths: dict[str, str]) -> str:
    """The generated prelude of the BPF program: constants, structs, pinned map declarations."""
    out = ["/* GENERATED by novanet_ebpf_policy.layouts — do not edit; change the Python layouts. */"]
    out += layouts_c.shared_defines()  # drop reasons, config keys, tunnel slots/contract (core)
    out += _enum_defines("NV_VERDICT_", Verdict) + _enum_defines("NV_HOOK_", Hook)
    out += _enum_defines("NV_ACTION_", Action)
    out += _enum_defines("NV_FS_", FlowStat) + _enum_defines("NV_PDIR_", PolicyDir)
    out += _enum_defines("NV_PEER_", PeerKind) + _enum_defines("NV_EPF_", EpPolicyFlag)
    out += _enum_defines("NV_CTF_", CtFlag) + [f"#define NV_RULE_KEY_BITS {RULE_KEY_BITS}"]
    out += _enum_defines("NV_EGRESS_", EgressAction) + _enum_defines("NV_EGRESS_F_", EgressFlag)
    out += _enum_defines("NV_TRAFFIC_", TrafficCode) + [f"#define NV_TRAFFIC_CODES {TRAFFIC_CODES}"]
    out += _enum_defines("NV_SVCF_", SvcFlag) + _enum_defines("NV_BEF_", BackendFlag)
    out += _enum_defines("NV_NATF_", NatFlag) + _enum_defines("NV_SVCSTAT_", SvcStat)
    out += [f"#define NV_CRC32C_POLY {CRC32C_POLY:#x}u"]
    out += [c_struct(s) for s in STRUCTS]
    out += [layouts_c.map_decl(name, m, pin_paths[name]) for name, m in MAPS.items()]
    return "\n".join(out) + "\n"


RINGBUF_MACRO = r"""
/* BCC 0.26 has no pinned ring-buffer macro; this is BPF_RINGBUF_OUTPUT with BCC's
   "maps/<type>:<pin path>" section convention (the same one BPF_TABLE_PINNED uses). */
#define NV_RINGBUF_PINNED(_name, _pages, _path) \
  struct _name##_table_t { int key; u32 leaf; \
    int (*ringbuf_output) (void *, u64, u64); void* (*ringbuf_reserve) (u64); \
    void (*ringbuf_discard) (void *, u64); void (*ringbuf_submit) (void *, u64); \
    u32 max_entries; }; \
  __attribute__((section("maps/ringbuf:" _path))) \
  struct _name##_table_t _name = { .max_entries = ((_pages) * PAGE_SIZE) }; \
  BPF_ANNOTATE_KV_PAIR(_name, int, u32)
"""
