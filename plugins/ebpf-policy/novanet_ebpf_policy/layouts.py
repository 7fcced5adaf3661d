"""Every map key/value and the flow event, defined ONCE as ctypes structures.

The C program never declares these itself: :func:`c_header` generates the C structs (with
``_Static_assert`` on every size and offset, so clang refuses a layout that differs from what
Python reads), the map declarations with their versioned pin paths, and the constants. Bump a
map's ``version`` whenever its layout changes; :mod:`.maps` then migrates the old pin.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass

from novanet_core.bpf.pinned import MapSpec

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class _S(ctypes.Structure):
    """Natural alignment with explicit padding: no implicit holes, same layout in clang."""

    c_name = ""


class EndpointKey(_S):
    c_name = "nv_endpoint_key"
    _fields_ = [("ip", u32)]  # numeric IPv4 (a<<24|b<<16|c<<8|d), as the original NovaNet


class EndpointValue(_S):
    c_name = "nv_endpoint"
    _fields_ = [
        ("ifindex", u32),  # host-side veth; 0 for a remote endpoint
        ("mac", u8 * 6),  # pod eth0 MAC
        ("host_mac", u8 * 6),  # host-side veth MAC (ARP answers, L2 source on redirect)
        ("identity", u32),
        ("node_ip", u32),  # numeric; 0 or CONFIG[NODE_IP] = local
        ("flags", u32),
    ]


class PolicyKey(_S):
    c_name = "nv_policy_key"
    _fields_ = [("src_identity", u32), ("dst_identity", u32), ("protocol", u8), ("pad", u8), ("dst_port", u16)]


class PolicyValue(_S):
    c_name = "nv_policy"
    _fields_ = [("action", u8), ("pad", u8 * 3)]


class TunnelKey(_S):
    c_name = "nv_tunnel_key"
    _fields_ = [("node_ip", u32)]


class TunnelValue(_S):
    c_name = "nv_tunnel"
    _fields_ = [("ifindex", u32), ("remote_ip", u32), ("vni", u32)]


class EgressKey(_S):
    c_name = "nv_egress_key"
    _fields_ = [("src_identity", u32), ("dst_ip", u32), ("dst_prefix_len", u8), ("pad", u8 * 3)]


class EgressValue(_S):
    c_name = "nv_egress"
    _fields_ = [("action", u8), ("pad", u8 * 3), ("snat_ip", u32)]


class FlowKey(_S):
    """Conntrack-lite key: one entry per direction of a flow (numeric IPs, host-order ports)."""

    c_name = "nv_flow_key"
    _fields_ = [("src_ip", u32), ("dst_ip", u32), ("src_port", u16), ("dst_port", u16), ("protocol", u8),
                ("pad", u8 * 3)]


class FlowState(_S):
    c_name = "nv_flow_state"
    _fields_ = [("last_seen_ns", u64), ("policy_revision", u32), ("flags", u32)]


class FlowEvent(_S):
    """Ring-buffer record (80 B, the original NovaNet layout; ``hook`` uses its spare byte 13)."""

    c_name = "nv_flow_event"
    _fields_ = [
        ("family", u8),  # 2 = IPv4
        ("verdict", u8),  # Verdict
        ("drop_reason", u8),  # DropReason
        ("tcp_flags", u8),  # byte 13 of the TCP header
        ("src_identity", u32),
        ("dst_identity", u32),
        ("protocol", u8),
        ("hook", u8),  # Hook: which program saw it
        ("src_port", u16),  # host order
        ("dst_port", u16),
        ("pad", u8 * 2),
        ("src_ip", u8 * 16),  # IPv4 in the first 4 bytes, network order
        ("dst_ip", u8 * 16),
        ("pad2", u8 * 4),
        ("bytes", u64),  # IP total length
        ("packets", u64),
        ("timestamp_ns", u64),  # bpf_ktime_get_ns (CLOCK_MONOTONIC)
    ]


STRUCTS: tuple[type[_S], ...] = (EndpointKey, EndpointValue, PolicyKey, PolicyValue, TunnelKey, TunnelValue,
                                 EgressKey, EgressValue, FlowKey, FlowState, FlowEvent)


class DropReason(enum.IntEnum):
    NONE = 0
    POLICY_DENIED = 1  # no rule allowed it (default deny / isolated), like Cilium 133
    NO_IDENTITY = 2  # source not in the endpoint map (spoofed, stale or unknown)
    NO_ROUTE = 3  # destination in this node's PodCIDR but no such endpoint
    NO_TUNNEL = 4  # tunnel entry present but the tunnel key could not be set
    TTL_EXCEEDED = 5
    RATE_LIMITED = 6  # reserved (original NovaNet code)
    POLICY_DENY_RULE = 7  # an explicit deny entry matched, like Cilium 181
    MALFORMED = 8  # truncated L3/L4 header


DROP_SLOTS = 16  # per-CPU drop counter slots: room for more reasons


class Verdict(enum.IntEnum):
    ALLOW = 1
    DENY = 2


class Hook(enum.IntEnum):
    FROM_POD = 0
    TO_POD = 1


class Action(enum.IntEnum):
    DENY = 0
    ALLOW = 1


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


CONFIG_SLOTS = 32


class FlowStat(enum.IntEnum):
    SUBMITTED = 0
    LOST = 1  # bpf_ringbuf_reserve failed: the consumer fell behind
    NEW_FLOWS = 2


FLOW_STAT_SLOTS = 4
RINGBUF_PAGES = 2048  # 8 MiB: ~116 k events of burst headroom


@dataclass(frozen=True)
class MapDef:
    spec: MapSpec
    key: str  # C type
    value: str


def _sz(t: type[ctypes._SimpleCData] | type[_S]) -> int:
    return ctypes.sizeof(t)


MAPS: dict[str, MapDef] = {
    m.spec.name: m
    for m in (
        MapDef(MapSpec("endpoints", "hash", _sz(EndpointKey), _sz(EndpointValue), 65536, 1),
               "struct nv_endpoint_key", "struct nv_endpoint"),
        MapDef(MapSpec("policies", "hash", _sz(PolicyKey), _sz(PolicyValue), 65536, 1),
               "struct nv_policy_key", "struct nv_policy"),
        MapDef(MapSpec("config", "array", 4, 8, CONFIG_SLOTS, 1), "u32", "u64"),
        MapDef(MapSpec("tunnels", "hash", _sz(TunnelKey), _sz(TunnelValue), 1024, 1),
               "struct nv_tunnel_key", "struct nv_tunnel"),
        MapDef(MapSpec("egress", "hash", _sz(EgressKey), _sz(EgressValue), 16384, 1),
               "struct nv_egress_key", "struct nv_egress"),
        MapDef(MapSpec("drops", "percpu_array", 4, 8, DROP_SLOTS, 1), "u32", "u64"),
        MapDef(MapSpec("ct", "lru_hash", _sz(FlowKey), _sz(FlowState), 65536, 1),
               "struct nv_flow_key", "struct nv_flow_state"),
        MapDef(MapSpec("flowstats", "percpu_array", 4, 8, FLOW_STAT_SLOTS, 1), "u32", "u64"),
        MapDef(MapSpec("flows", "ringbuf", 0, 0, RINGBUF_PAGES * 4096, 1), "int", "u32"),
    )
}

_CTYPE = {u8: "u8", u16: "u16", u32: "u32", u64: "u64"}


def c_struct(cls: type[_S]) -> str:
    lines = [f"struct {cls.c_name} {{"]
    asserts = []
    for name, typ in cls._fields_:
        if issubclass(typ, ctypes.Array):
            lines.append(f"    {_CTYPE[typ._type_]} {name}[{typ._length_}];")
        else:
            lines.append(f"    {_CTYPE[typ]} {name};")
        off = getattr(cls, name).offset
        asserts.append(f"_Static_assert(__builtin_offsetof(struct {cls.c_name}, {name}) == {off}, "
                       f"\"{cls.c_name}.{name} offset\");")
    lines.append("};")
    asserts.append(f"_Static_assert(sizeof(struct {cls.c_name}) == {ctypes.sizeof(cls)}, \"{cls.c_name} size\");")
    return "\n".join(lines + asserts)


def _enum_defines(prefix: str, e: type[enum.IntEnum]) -> list[str]:
    return [f"#define {prefix}{m.name} {int(m)}" for m in e]


def c_header(pin_paths: dict[str, str]) -> str:
    """The generated prelude of the BPF program: constants, structs, pinned map declarations."""
    out = ["/* GENERATED by novanet_ebpf_policy.layouts — do not edit; change the Python layouts. */"]
    out += _enum_defines("NV_DROP_", DropReason) + [f"#define NV_DROP_SLOTS {DROP_SLOTS}"]
    out += _enum_defines("NV_VERDICT_", Verdict) + _enum_defines("NV_HOOK_", Hook)
    out += _enum_defines("NV_ACTION_", Action) + _enum_defines("NV_CFG_", ConfigKey)
    out += _enum_defines("NV_FS_", FlowStat)
    out += [c_struct(s) for s in STRUCTS]
    for name, m in MAPS.items():
        path = pin_paths[name]
        if m.spec.type == "ringbuf":
            out.append(f'NV_RINGBUF_PINNED({name}, {m.spec.max_entries // 4096}, "{path}");')
        else:
            out.append(f'BPF_TABLE_PINNED("{m.spec.type}", {m.key}, {m.value}, {name}, '
                       f'{m.spec.max_entries}, "{path}");')
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
