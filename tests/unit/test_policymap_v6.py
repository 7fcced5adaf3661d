"""IPv6 ipBlocks in the policy maps, without root: PolicyProgrammer over in-memory maps writes IPv6
prefixes into ``policy_cidrs_v6`` (keys of the kernel layout), IPv4 ones into ``policy_cidrs``, both
with ids from one space; a dual-stack pod's two addresses share one set; a restart adopts both
tries and rewrites nothing; a full ``policy_cidrs_v6`` fails closed like the IPv4 trie."""

from __future__ import annotations

import ctypes
import errno
import ipaddress

from novanet_ebpf_policy.layouts import EpPolicyFlag, PolicyCidr6Key, PolicyCidrKey
from novanet_ebpf_policy.policymap import (
    CIDR_VALUE,
    EP_VALUE,
    PeerKind,
    PolicyProgrammer,
    decode_rule_key,
    ip_key,
)

from novanet_core.policy import CidrPeer, DirectionPolicy, EndpointPolicy, Rule

MAPS = ("policy_rules", "policy_cidrs", "policy_cidrs_v6", "ep_policy", "ep_policy_v6")


class Maps:
    def __init__(self, caps: dict[str, int] | None = None):
        self.caps = caps or {}
        self.data: dict[str, dict[bytes, bytes]] = {n: {} for n in MAPS}
        self.writes = 0

    def update(self, name: str, key: bytes, value: bytes) -> None:
        m = self.data[name]
        if key not in m and len(m) >= self.caps.get(name, 1 << 30):
            raise OSError(errno.E2BIG if name.startswith("ep_") else errno.ENOSPC, "full")
        m[bytes(key)] = bytes(value)
        self.writes += 1

    def delete(self, name: str, key: bytes) -> bool:
        return self.data[name].pop(bytes(key), None) is not None

    def items(self, name: str):
        return list(self.data[name].items())


def rule(cidr: str, *excepts: str, origin: str = "ingress[0]") -> Rule:
    return Rule(CidrPeer(cidr, excepts), None, "t/p", origin)


def dual(*rules: Rule, egress: bool = False) -> list[EndpointPolicy]:
    d = DirectionPolicy(True, rules, ("t/p",))
    ing, eg = (DirectionPolicy(False), d) if egress else (d, DirectionPolicy(False))
    return [EndpointPolicy("t/a", 300, ip, "n1", ing, eg) for ip in ("10.42.0.10", "fd00:42::10")]


def cidrs(m: Maps, name: str) -> dict[str, int]:
    out = {}
    for k, v in m.data[name].items():
        plen = int.from_bytes(k[:4], "little")
        out[str(ipaddress.ip_network((ipaddress.ip_address(k[4:]), plen)))] = CIDR_VALUE.unpack(v)[0]
    return out


def test_ipv6_prefixes_go_to_their_own_trie_with_ids_of_one_space() -> None:
    m = Maps()
    p = PolicyProgrammer(m)
    p.apply(dual(rule("fd00::/16", "fd00:1::/32"), rule("10.0.0.0/8", "10.1.0.0/16", origin="ingress[1]")))
    v6, v4 = cidrs(m, "policy_cidrs_v6"), cidrs(m, "policy_cidrs")
    assert set(v6) == {"fd00::/16", "fd00:1::/32"} and set(v4) == {"10.0.0.0/8", "10.1.0.0/16"}
    assert len(set(v6.values()) | set(v4.values())) == 4  # one id space: a rule names an id, not a family
    assert all(len(k) == ctypes.sizeof(PolicyCidr6Key) for k in m.data["policy_cidrs_v6"])
    assert all(len(k) == ctypes.sizeof(PolicyCidrKey) for k in m.data["policy_cidrs"])
    # the excepts' ids have no rule entry (an address they hold resolves to them, and misses)
    peers = {decode_rule_key(k)[3] for k in m.data["policy_rules"] if decode_rule_key(k)[2] == PeerKind.CIDR}
    assert peers == {v6["fd00::/16"], v4["10.0.0.0/8"]}
    # the pod's two addresses point at one set
    vals = {EP_VALUE.unpack(v) for n in ("ep_policy", "ep_policy_v6") for v in m.data[n].values()}
    assert len(vals) == 1 and next(iter(vals))[2] == EpPolicyFlag.INGRESS_ISOLATED


def test_excepts_at_any_depth_and_a_nested_block_get_the_exact_entries() -> None:
    m = Maps()
    p = PolicyProgrammer(m)
    # allow fd00::/16 except fd00:1::/32, and (another rule) fd00:1:2::/48 inside that except
    p.apply(dual(rule("fd00::/16", "fd00:1::/32"), rule("fd00:1:2::/48", origin="ingress[1]"), egress=True))
    v6 = cidrs(m, "policy_cidrs_v6")
    peers = {decode_rule_key(k)[3] for k in m.data["policy_rules"]}
    # fd00::/16 admits its own id and the /48 (inside it, in no except); the /32 except admits nothing
    assert peers == {v6["fd00::/16"], v6["fd00:1:2::/48"]}


def test_restart_adopts_both_tries_and_removal_cleans_them() -> None:
    m = Maps()
    eps = dual(rule("fd00::/16", "fd00:1::/32"), rule("10.0.0.0/8", origin="ingress[1]"))
    PolicyProgrammer(m).apply(eps, full=True)
    before = {n: dict(d) for n, d in m.data.items()}
    writes = m.writes
    again = PolicyProgrammer(m)
    assert again.adopt_live() == {"sets": 1, "cidrs": 3, "endpoints": 2}
    st = again.apply(eps, full=True)
    assert not st.changed() and m.writes == writes and m.data == before
    again.apply([], [e.ip or "" for e in eps])
    assert all(not d for d in m.data.values())


def test_a_full_ipv6_trie_fails_closed_and_recovers() -> None:
    m = Maps({"policy_cidrs_v6": 1})
    p = PolicyProgrammer(m)
    st = p.apply(dual(rule("fd00::/16", "fd00:1::/32")))
    assert st.blocked == ["10.42.0.10", "fd00:42::10"] and not m.data["policy_cidrs_v6"]
    closed = EP_VALUE.unpack(m.data["ep_policy_v6"][ip_key("fd00:42::10")])[2]
    assert closed & EpPolicyFlag.UNPROGRAMMED
    m.caps["policy_cidrs_v6"] = 10
    assert p.retry().blocked == []  # type: ignore[union-attr]
    assert set(cidrs(m, "policy_cidrs_v6")) == {"fd00::/16", "fd00:1::/32"}
