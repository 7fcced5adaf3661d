"""The egress map decides traffic leaving the cluster exactly as the compiled NetworkPolicy does.

The map is read the way nv_from_pod reads it (longest prefix among the source identity's own
entries, else the any-source entry; PORTS and DEFAULT entries leave the decision to the pod's
policy), and compared with :meth:`DirectionPolicy.check` for random ipBlock policies.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from novanet_ebpf_policy.egressmap import ANY_SOURCE, EgressEntry, EgressProgrammer, compile_egress
from novanet_ebpf_policy.layouts import EgressAction, EgressFlag

from novanet_core.policy.compiled import (
    AnyPeer,
    CidrPeer,
    DirectionPolicy,
    EndpointPolicy,
    IdentityPeer,
    PortRange,
    Rule,
)

OPEN = DirectionPolicy(isolated=False)
ID = 4711


def lookup(entries: list[EgressEntry], identity: int, addr: str) -> EgressEntry:
    a = ipaddress.IPv4Address(addr)
    for src in (identity, ANY_SOURCE):
        hits = [e for e in entries if e.src_identity == src and a in ipaddress.IPv4Network(e.cidr)]
        if hits:
            return max(hits, key=lambda e: ipaddress.IPv4Network(e.cidr).prefixlen)
    raise AssertionError("no any-source entry")


def datapath_allows(entries: list[EgressEntry], egress: DirectionPolicy, addr: str, proto: str, port: int) -> bool:
    e = lookup(entries, ID, addr)
    if e.action == EgressAction.DENY:
        return False
    if e.flags & (EgressFlag.PORTS | EgressFlag.DEFAULT):
        return egress.check(None, addr, proto, port).allowed  # the pod's policy set (nv_side)
    return True


def spec(egress: DirectionPolicy, ip: str = "10.42.0.5") -> EndpointPolicy:
    return EndpointPolicy(pod="x/a", identity=ID, ip=ip, node="n1", ingress=OPEN, egress=egress)


def rule(peer, ports=None, i=0) -> Rule:
    return Rule(peer, ports, "x/p", f"egress[{i}]")


def test_not_isolated_uses_the_masquerade_entry_only():
    entries = compile_egress([spec(OPEN)], masquerade=True, snat_ip="172.30.0.2")
    assert [(e.src_identity, e.cidr, e.action, e.snat_ip) for e in entries] == [
        (0, "0.0.0.0/0", EgressAction.SNAT, "172.30.0.2")]
    assert compile_egress([spec(OPEN)], masquerade=False, snat_ip="172.30.0.2")[0].action == EgressAction.ALLOW


def test_ipblock_with_except_and_isolation():
    eg = DirectionPolicy(True, (rule(CidrPeer("203.0.113.0/24", ("203.0.113.128/25",))),), ("x/p",))
    entries = {(e.src_identity, e.cidr): e for e in compile_egress([spec(eg)], masquerade=True, snat_ip="1.2.3.4")}
    assert entries[(ID, "203.0.113.0/24")].action == EgressAction.SNAT
    deny = entries[(ID, "203.0.113.128/25")]
    assert deny.action == EgressAction.DENY and deny.origin == "egress[0] except" and deny.policies == ("x/p",)
    iso = entries[(ID, "0.0.0.0/0")]
    assert iso.action == EgressAction.DENY and iso.origin == "isolated"


def test_ports_are_left_to_the_policy_set():
    eg = DirectionPolicy(True, (rule(CidrPeer("198.51.100.0/24"), (PortRange("TCP", 443, 443),)),), ("x/p",))
    entries = {(e.src_identity, e.cidr): e for e in compile_egress([spec(eg)], masquerade=False, snat_ip="")}
    e = entries[(ID, "198.51.100.0/24")]
    assert e.action == EgressAction.ALLOW and e.flags & EgressFlag.PORTS and (e.protocol, e.ports) == ("TCP", "443")


def test_pods_of_one_identity_with_different_rules_fall_back_to_their_policy():
    a = DirectionPolicy(True, (rule(CidrPeer("203.0.113.0/24")),), ("x/p",))
    b = DirectionPolicy(True, (), ("x/p",))
    entries = compile_egress([spec(a, "10.42.0.5"), spec(b, "10.42.0.6")], masquerade=False, snat_ip="")
    own = [e for e in entries if e.src_identity == ID]
    assert len(own) == 1 and own[0].flags & EgressFlag.PORTS


_prefix = st.builds(lambda a, plen: str(ipaddress.IPv4Network((a << 8 | 0xCB000000, plen), strict=False)),
                    st.integers(0, 0xFFFF), st.integers(8, 32))
_ports = st.one_of(st.none(), st.lists(st.builds(lambda p, f, n: PortRange(p, f, min(65535, f + n)),
                                                 st.sampled_from(["TCP", "UDP"]), st.integers(1, 2000),
                                                 st.integers(0, 50)), min_size=1, max_size=2).map(tuple))
_peer = st.one_of(st.builds(lambda c, ex: CidrPeer(c, tuple(ex)), _prefix, st.lists(_prefix, max_size=3)),
                  st.just(AnyPeer()), st.just(IdentityPeer(frozenset({999}))))


@settings(max_examples=150, deadline=None)
@given(rules=st.lists(st.tuples(_peer, _ports), max_size=4),
       probes=st.lists(st.tuples(st.integers(0, 0xFFFFFF), st.sampled_from(["TCP", "UDP"]), st.integers(1, 2100)),
                       min_size=1, max_size=30),
       masquerade=st.booleans())
def test_same_answer_as_networkpolicy(rules, probes, masquerade):
    eg = DirectionPolicy(True, tuple(rule(p, ports, i) for i, (p, ports) in enumerate(rules)), ("x/p",))
    entries = compile_egress([spec(eg)], masquerade, "172.30.0.2")
    for low, proto, port in probes:
        addr = str(ipaddress.IPv4Address(0xCB000000 | low))  # 203.x.y.z: outside any cluster CIDR here
        assert datapath_allows(entries, eg, addr, proto, port) == eg.check(None, addr, proto, port).allowed, \
            (addr, proto, port, [(e.src_identity, e.cidr, e.action.name, int(e.flags)) for e in entries])


class KernelMaps:
    """Real (unpinned) kernel maps of the egress layouts, with the access EgressProgrammer uses."""

    def __init__(self) -> None:
        from novanet_ebpf_policy.layouts import MAPS

        from novanet_core.bpf import syscall

        self.sys = syscall
        self.specs = {n: MAPS[n].spec for n in ("egress", "egress_stats")}
        self.fds = {n: syscall.map_create(syscall.MAP_TYPES[s.type], s.key_size, s.value_size, s.max_entries,
                                          s.flags, n) for n, s in self.specs.items()}
        self.ncpu = syscall.possible_cpus()

    def close(self) -> None:
        import os

        for fd in self.fds.values():
            os.close(fd)

    def update(self, name, k, v):
        self.sys.map_update(self.fds[name], bytes(k), bytes(v))

    def delete(self, name, k):
        return self.sys.map_delete(self.fds[name], bytes(k))

    def items(self, name):
        s = self.specs[name]
        return list(self.sys.map_items(self.fds[name], s.key_size, s.value_size))

    def counter_sum(self, name, slot):
        raw = self.sys.map_lookup(self.fds[name], slot.to_bytes(4, "little"), 16 * self.ncpu)
        return sum(int.from_bytes(raw[16 * i:16 * i + 8], "little") for i in range(self.ncpu)), 0


@pytest.mark.root
@pytest.mark.bpf
def test_programmer_writes_differences_and_keeps_slots():
    m = KernelMaps()
    try:
        p = EgressProgrammer(m, ncpu=m.ncpu)
        eg = DirectionPolicy(True, (rule(CidrPeer("203.0.113.0/24")),), ("x/p",))
        first = p.apply(compile_egress([spec(eg)], True, "1.2.3.4"))
        assert first == {"written": 3, "removed": 0, "entries": 3}
        slots = dict(p.slots)
        assert p.apply(compile_egress([spec(eg)], True, "1.2.3.4")) == {"written": 0, "removed": 0, "entries": 3}
        again = p.apply(compile_egress([spec(eg)], False, ""))  # masquerade off: actions change, slots stay
        assert again["written"] == 2 and p.slots == slots  # the DENY entry does not change
        # a count in a slot that is handed to a new key is zeroed first
        slot = slots[(ID, "203.0.113.0/24")]
        m.update("egress_stats", slot.to_bytes(4, "little"), (5).to_bytes(8, "little") * 2 * m.ncpu)
        p.apply(compile_egress([spec(OPEN)], False, ""))
        assert set(p.slots) == {(0, "0.0.0.0/0")} and len(m.items("egress")) == 1
        restarted = EgressProgrammer(m, ncpu=m.ncpu)
        assert restarted.adopt_live() == 1 and restarted.slots == p.slots
        eg2 = DirectionPolicy(True, (rule(CidrPeer("198.51.100.0/24")),), ("x/p",))
        restarted.apply(compile_egress([spec(eg2)], False, ""))
        assert all(restarted.counters(s)[0] == 0 for s in restarted.slots.values())
    finally:
        m.close()
