"""The map encoding of compiled policy, without root: port ranges as prefixes, ipBlock excepts as
CIDR ids, and the datapath's three lookups (any / identity / CIDR id, the CIDR id from the trie of
the peer address's family) reproduced over the entries (a longest-prefix match in Python) agreeing
with ``DirectionPolicy.check`` on random packets of both families."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from novanet_ebpf_policy.layouts import PolicyRuleKey, PolicyRuleValue
from novanet_ebpf_policy.policymap import (
    PEER_BITS,
    CidrIndex,
    PeerKind,
    port_prefixes,
    rule_key,
    set_entries,
    set_rules,
)

from novanet_core.policy import (
    AnyPeer,
    CidrPeer,
    DirectionPolicy,
    EndpointPolicy,
    IdentityPeer,
    PortRange,
    Rule,
)
from novanet_core.policy.wire import decode_endpoint, encode_endpoint
from novanet_core.protocols import IP_PROTOCOLS


def test_port_prefixes_cover_exactly_the_range() -> None:
    for first, last in [(0, 65535), (80, 80), (1, 65535), (1000, 2000), (5000, 5010), (32768, 60999), (0, 0)]:
        covered = set()
        for start, bits in port_prefixes(first, last):
            size = 1 << (16 - bits)
            assert start % size == 0
            covered |= set(range(start, start + size))
        assert covered == set(range(first, last + 1))
    assert max(len(port_prefixes(a, b)) for a, b in [(1, 65534), (1, 65535), (2, 65533)]) <= 30
    assert port_prefixes(0, 65535) == [(0, 0)]


def test_key_layout_matches_ctypes() -> None:
    import ctypes

    k = rule_key(90, 0x01020304, 1, 0x0A0B0C0D, 6, 0x1F90)
    c = PolicyRuleKey.from_buffer_copy(k)
    assert ctypes.sizeof(PolicyRuleKey) == len(k) == 16 and ctypes.sizeof(PolicyRuleValue) == 4
    assert (c.prefixlen, bytes(c.set_id), c.kind, bytes(c.peer), c.protocol, bytes(c.port)) == (
        90, b"\x01\x02\x03\x04", 1, b"\x0a\x0b\x0c\x0d", 6, b"\x1f\x90")


def _bits(k: bytes) -> tuple[int, int]:
    return int.from_bytes(k[:4], "little"), int.from_bytes(k[4:16], "big")


def lpm_hit(entries: dict[bytes, bytes], key: bytes) -> bool:
    """What the kernel's LPM trie answers for a full-length key: is some entry a prefix of it?"""
    _, want = _bits(key)
    for k in entries:
        plen, data = _bits(k)
        if plen == 0 or (data >> (96 - plen)) == (want >> (96 - plen)):
            return True
    return False


def datapath_allows(entries: dict[bytes, bytes], cidrs: CidrIndex, peer_id: int | None, ip: str, proto: int,
                    port: int) -> bool:
    """nv_set_allows() of datapath.c, over Python dicts."""
    if lpm_hit(entries, rule_key(96, 7, PeerKind.ANY, 0, proto, port)):
        return True
    if peer_id is not None and lpm_hit(entries, rule_key(96, 7, PeerKind.IDENTITY, peer_id, proto, port)):
        return True
    addr = ipaddress.ip_address(ip)
    best = None
    for net in cidrs.ids:  # policy_cidrs or policy_cidrs_v6: the address's family only
        n = ipaddress.ip_network(net)
        if n.version == addr.version and addr in n and (best is None or n.prefixlen > best.prefixlen):
            best = n
    return best is not None and lpm_hit(entries, rule_key(96, 7, PeerKind.CIDR, cidrs.ids[str(best)], proto, port))


PEERS = [AnyPeer(), IdentityPeer(frozenset({300, 301})), CidrPeer("10.0.0.0/8", ("10.1.0.0/16", "10.2.3.0/24")),
         CidrPeer("10.1.2.0/24"), CidrPeer("10.2.3.4/32"), CidrPeer("0.0.0.0/0", ("10.0.0.0/8",)),
         # IPv6: excepts at two depths, a /128, ::/0, a block holding the IPv4-mapped range
         CidrPeer("fd00::/16", ("fd00:1::/32", "fd00:2:3::/48")), CidrPeer("fd00:1:2::/48"),
         CidrPeer("fd00:2:3::4/128"), CidrPeer("::/0", ("fd00::/16",)), CidrPeer("::ffff:0:0/96")]
PORTS = [None, (PortRange("TCP", 80, 80),), (PortRange("TCP", 1000, 2000), PortRange("UDP", 53, 53)),
         (PortRange("SCTP", 0, 65535),), (PortRange("UDP", 5000, 5010),)]

rules_st = st.lists(st.tuples(st.sampled_from(PEERS), st.sampled_from(PORTS)), min_size=0, max_size=5)
packet_st = st.tuples(st.sampled_from([None, 300, 301, 302]),
                      st.sampled_from(["10.1.2.3", "10.1.9.9", "10.2.3.4", "10.2.3.5", "10.9.9.9", "192.168.1.1",
                                       "fd00:1:2::3", "fd00:1:9::9", "fd00:2:3::4", "fd00:2:3::5", "fd00:9::9",
                                       "2001:db8::1", "::ffff:10.1.2.3"]),
                      st.sampled_from(["TCP", "UDP", "SCTP"]),
                      st.sampled_from([0, 53, 79, 80, 81, 999, 1000, 1500, 2000, 2001, 5000, 5010, 5011, 65535]))


@settings(max_examples=300, deadline=None)
@given(rules_st, st.lists(packet_st, min_size=1, max_size=12))
def test_entries_decide_like_the_compiled_form(rule_specs: list, packets: list) -> None:
    rules = tuple(Rule(p, ports, "ns/pol", f"ingress[{i}]") for i, (p, ports) in enumerate(rule_specs))
    ep = EndpointPolicy("ns/pod", 400, "10.7.0.1", "n", DirectionPolicy(True, rules, ("ns/pol",)),
                        DirectionPolicy(False))
    spec = set_rules(decode_endpoint(encode_endpoint(ep, "10.7.0.1")).ingress)
    assert spec is not None
    prefixes = {r.cidr for r in spec if r.kind == PeerKind.CIDR}
    prefixes |= {e for r in spec if r.kind == PeerKind.CIDR for e in r.excepts}
    cidrs = CidrIndex({p: i + 1 for i, p in enumerate(sorted(prefixes))})
    entries = set_entries(7, spec, cidrs)
    for ident, ip, proto, port in packets:
        want = ep.ingress.check(ident, ip, proto, port).allowed
        got = datapath_allows(entries, cidrs, ident, ip, IP_PROTOCOLS[proto], port)
        assert got == want, (ident, ip, proto, port, [r.describe() for r in rules])


def test_any_protocol_rule_stops_before_the_protocol_byte() -> None:
    ep = EndpointPolicy("ns/p", 400, "10.7.0.1", "n", DirectionPolicy(True, (Rule(AnyPeer(), None, "ns/a", "ingress[0]"),)),
                        DirectionPolicy(False))
    spec = set_rules(decode_endpoint(encode_endpoint(ep, "10.7.0.1")).ingress)
    assert spec is not None
    entries = set_entries(7, spec, CidrIndex({}))
    assert [int.from_bytes(k[:4], "little") for k in entries] == [PEER_BITS]
