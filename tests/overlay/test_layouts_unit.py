"""Pure-logic checks of the shared layouts and the generated C (no root needed)."""

from __future__ import annotations

import ctypes

from novanet_ebpf_policy import layouts as dp_layouts
from novanet_ebpf_policy import program as dp_program
from novanet_geneve import layouts as gnv_layouts
from novanet_geneve import wire
from novanet_vxlan import layouts as vx_layouts

from novanet_core.bpf import layouts, layouts_c


def test_shared_structs_have_no_implicit_padding():
    for cls in (*layouts.SHARED_STRUCTS, gnv_layouts.NodeKey, gnv_layouts.NodeValue, vx_layouts.NodeKey,
                vx_layouts.NodeValue):
        end = 0
        for name, typ in cls._fields_:
            assert getattr(cls, name).offset == end, f"{cls.__name__}.{name}"
            end += ctypes.sizeof(typ)
        assert ctypes.sizeof(cls) == end


def test_datapath_uses_the_core_definitions_not_copies():
    for name in ("endpoints", "config", "tunnels", "drops", "tunnel_progs"):
        assert dp_layouts.MAPS[name] is layouts.SHARED_MAPS[name]
    assert dp_layouts.EndpointValue is layouts.EndpointValue and dp_layouts.TunnelValue is layouts.TunnelValue
    assert dp_layouts.DropReason is layouts.DropReason and dp_layouts.ConfigKey is layouts.ConfigKey


def test_every_program_declares_a_shared_map_at_the_same_pin_with_the_same_types():
    root = "/sys/fs/bpf/x"
    decls = {}
    for text in (dp_layouts.c_header(dp_program.pin_paths(root)), gnv_layouts.PROGRAMS.prelude(root),
                 vx_layouts.PROGRAMS.prelude(root)):
        for line in text.splitlines():
            if line.startswith("BPF_TABLE_PINNED("):
                name = line.split(",")[3].strip()
                decls.setdefault(name, set()).add(line)
    for name in ("endpoints", "tunnels", "drops"):
        assert len(decls[name]) == 1, decls[name]  # identical declaration (type, key, value, size, pin)
    assert decls["tunnel_progs"] == {f'BPF_TABLE_PINNED("prog", u32, u32, tunnel_progs, {layouts.TUNNEL_SLOTS}, '
                                     f'"{root}/maps/tunnel_progs_v1");'}


def test_contract_constants_reach_the_c_side():
    defs = "\n".join(layouts_c.shared_defines())
    assert f"#define NV_TUNNEL_MARK {layouts.TUNNEL_MARK:#x}" in defs and layouts.TUNNEL_MARK == 0x4000
    assert f"#define NV_CB_DECAP_MAGIC {layouts.CB_DECAP_MAGIC:#x}" in defs
    assert "#define NV_TUNNEL_SLOT_ENCAP 0" in defs
    assert "#define NV_DROP_NO_TUNNEL 4" in defs and "#define NV_DROP_NO_ROUTE 3" in defs
    assert max(layouts.DropReason) < layouts.DROP_SLOTS


def test_geneve_overhead_is_58_and_matches_the_c_struct_assert():
    assert wire.OVERHEAD == 58
    assert "#define GNV_OVERHEAD 58" in gnv_layouts.PROGRAMS.prelude("/sys/fs/bpf/x")
    assert 0xFFF0 <= wire.OPT_CLASS <= 0xFFFF and not wire.OPT_TYPE & 0x80  # experimental, non-critical


def test_tunnel_programs_get_their_counters_and_helpers_generated():
    for progs in (gnv_layouts.PROGRAMS, vx_layouts.PROGRAMS):
        text = progs.prelude("/sys/fs/bpf/x")
        stats = f"{progs.name}_stats"
        assert (f'BPF_TABLE_PINNED("percpu_array", u32, u64, {stats}, 16, '
                f'"/sys/fs/bpf/x/{progs.name}/maps/{stats}_v1");') in text
        assert f"{stats}.lookup(&i)" in text and "static __always_inline int nv_drop(" in text
        assert f"#define {progs.c_prefix}_STAT_ENCAP 0" in text
        assert "\nNV_GENERATED\n" not in progs.render("/sys/fs/bpf/x")


def test_node_key_ipv4_is_the_address_and_ipv6_a_nonzero_fold() -> None:
    assert layouts.node_key("10.1.2.3") == 0x0A010203
    k = layouts.node_key("fd00:31::2")
    assert 0 < k < 1 << 32 and k != layouts.node_key("fd00:31::3")
    assert layouts.node_key("fd00:31:0::2") == k  # the address, not its spelling


def test_tunnel_entries_of_either_family_round_trip() -> None:
    from novanet_core.bpf.tunnel import entries

    v6 = entries.tunnel_value(7, "fd00:31::2", 1)
    assert v6.flags == layouts.TunnelFlag.IPV6 and v6.remote_ip == 0
    assert entries.entry_ip(v6) == "fd00:31::2"
    assert entries.entry_ip(entries.tunnel_value(7, "172.31.0.2", 1)) == "172.31.0.2"
    assert entries.key_collisions(["fd00:31::2", "fd00:31::3", "fd00:31::2"]) == {}
