"""Layouts are defined once in Python; the C side is generated from them (no root needed)."""

from __future__ import annotations

import ctypes

from novanet_ebpf_policy import layouts, program
from novanet_ebpf_policy.flows import EVENT


def test_sizes_match_original_novanet_and_maps() -> None:
    assert ctypes.sizeof(layouts.PolicyKey) == 12
    assert ctypes.sizeof(layouts.PolicyValue) == 4
    assert ctypes.sizeof(layouts.TunnelValue) == 32  # version 2: flags, remote_ip6
    # the egress map is an LPM trie (layout v2): prefixlen + identity + address, and a rule slot
    assert ctypes.sizeof(layouts.EgressKey) == 12 and ctypes.sizeof(layouts.EgressValue) == 12
    assert ctypes.sizeof(layouts.FlowEvent) == 80
    assert ctypes.sizeof(layouts.EndpointValue) == 28
    for name, m in layouts.MAPS.items():
        if m.spec.type != "ringbuf" and m.key.startswith("struct"):
            key_cls = next(s for s in layouts.STRUCTS if f"struct {s.c_name}" == m.key)
            assert ctypes.sizeof(key_cls) == m.spec.key_size, name


def test_no_implicit_padding() -> None:
    # natural alignment everywhere, holes are explicit fields: clang and ctypes must agree
    for cls in layouts.STRUCTS:
        end = 0
        for fname, typ in cls._fields_:
            assert getattr(cls, fname).offset == end, f"{cls.__name__}.{fname} has a hole before it"
            end += ctypes.sizeof(typ)
        assert end == ctypes.sizeof(cls), f"{cls.__name__} has tail padding"


def test_flow_event_struct_matches_ctypes() -> None:
    ev = layouts.FlowEvent(family=2, verdict=2, drop_reason=7, tcp_flags=0x12, src_identity=1001,
                           dst_identity=1002, protocol=6, hook=1, src_port=40000, dst_port=80,
                           bytes=1500, packets=1, timestamp_ns=123456789)
    ctypes.memmove(ev.src_ip, bytes([10, 42, 0, 10]), 4)
    ctypes.memmove(ev.dst_ip, bytes([10, 42, 0, 11]), 4)
    t = EVENT.unpack(bytes(ev))
    assert t[:10] == (2, 2, 7, 0x12, 1001, 1002, 6, 1, 40000, 80)
    assert t[10][:4] == bytes([10, 42, 0, 10]) and t[11][:4] == bytes([10, 42, 0, 11])
    assert t[12:] == (1500, 1, 123456789)


def test_generated_c_asserts_every_offset() -> None:
    hdr = layouts.c_header(program.pin_paths("/sys/fs/bpf/x"))
    for cls in layouts.STRUCTS:
        for fname, _ in cls._fields_:
            off = getattr(cls, fname).offset
            assert f"__builtin_offsetof(struct {cls.c_name}, {fname}) == {off}" in hdr
        assert f"sizeof(struct {cls.c_name}) == {ctypes.sizeof(cls)}" in hdr
    for name in ("endpoints", "policies", "config", "tunnels", "flows", "egress", "drops"):
        assert f"/sys/fs/bpf/x/maps/{name}_v" in hdr
    src = program.source("/sys/fs/bpf/x")
    assert "NV_GENERATED\n" not in src.split("*/", 1)[1]


def test_drop_reason_codes_keep_the_guide_names() -> None:
    R = layouts.DropReason
    assert (R.POLICY_DENIED, R.NO_IDENTITY, R.NO_ROUTE, R.NO_TUNNEL, R.TTL_EXCEEDED) == (1, 2, 3, 4, 5)
    assert R.POLICY_DENY_RULE != R.POLICY_DENIED
    assert max(R) < layouts.DROP_SLOTS


def test_egress_key_packing_matches_ctypes() -> None:
    from novanet_ebpf_policy.egressmap import VALUE, decode_key, egress_key

    k = egress_key(4711, "203.0.113.0/24")
    ck = layouts.EgressKey.from_buffer_copy(k)
    assert ck.prefixlen == 32 + 24 and bytes(ck.src_identity) == (4711).to_bytes(4, "big")
    assert bytes(ck.dst_ip) == bytes([203, 0, 113, 0]) and decode_key(k) == (4711, "203.0.113.0/24")
    v = layouts.EgressValue.from_buffer_copy(VALUE.pack(2, 1, 0, 77, bytes([172, 30, 0, 2])))
    assert (v.action, v.flags, v.rule, v.snat_ip) == (2, 1, 77, int.from_bytes(bytes([172, 30, 0, 2]), "little"))
