"""PolicyProgrammer with maps that run out of room (a stand-in for the three pinned maps that
refuses a new key past a capacity, as the kernel does: ENOSPC for the tries, E2BIG for the hash):
every write of the refused apply is undone, the endpoints concerned fail closed, and a retry once
there is room programs exactly what a plain apply would have."""

from __future__ import annotations

import errno

from novanet_ebpf_policy.layouts import EpPolicyFlag
from novanet_ebpf_policy.policymap import EP_VALUE, PolicyProgrammer, ip_key

from novanet_core.policy import CidrPeer, DirectionPolicy, EndpointPolicy, IdentityPeer, Rule

CAPACITY_ERRNO = {"policy_rules": errno.ENOSPC, "policy_cidrs": errno.ENOSPC, "ep_policy": errno.E2BIG}


class SmallMaps:
    def __init__(self, caps: dict[str, int]):
        self.caps = caps
        self.data: dict[str, dict[bytes, bytes]] = {n: {} for n in CAPACITY_ERRNO}

    def update(self, name: str, key: bytes, value: bytes) -> None:
        m = self.data[name]
        if key not in m and len(m) >= self.caps.get(name, 1 << 30):
            raise OSError(CAPACITY_ERRNO[name], "full")
        m[bytes(key)] = bytes(value)

    def delete(self, name: str, key: bytes) -> bool:
        return self.data[name].pop(bytes(key), None) is not None

    def items(self, name: str):
        return list(self.data[name].items())


def ep(ip: str, *rules: Rule) -> EndpointPolicy:
    return EndpointPolicy(pod=f"t/{ip}", identity=7, ip=ip, node="n1",
                          ingress=DirectionPolicy(bool(rules), tuple(rules), ("t/p",) if rules else ()),
                          egress=DirectionPolicy(False))


def from_cidr(cidr: str) -> Rule:
    return Rule(peer=CidrPeer(cidr), ports=None, policy="t/p", origin="ingress[0]")


def from_ids(*ids: int) -> Rule:
    return Rule(peer=IdentityPeer(frozenset(ids)), ports=None, policy="t/p", origin="ingress[1]")


def test_refused_apply_is_undone_and_its_endpoint_fails_closed_then_recovers() -> None:
    maps = SmallMaps({"policy_cidrs": 1})
    p = PolicyProgrammer(maps)
    st = p.apply([ep("10.0.0.1", from_cidr("192.0.2.0/24")), ep("10.0.0.2")])
    assert st.blocked == [] and len(maps.data["policy_cidrs"]) == 1
    good = {n: dict(d) for n, d in maps.data.items()}

    # a second prefix does not fit: nothing of this apply stays but the fail-closed pointer
    st = p.apply([ep("10.0.0.2", from_cidr("198.51.100.0/24"), from_ids(9))])
    assert st.blocked == ["10.0.0.2"]
    assert maps.data["policy_cidrs"] == good["policy_cidrs"] and maps.data["policy_rules"] == good["policy_rules"]
    i, e, flags, _ = EP_VALUE.unpack(maps.data["ep_policy"][ip_key("10.0.0.2")])
    assert (i, e) == (0, 0) and flags & EpPolicyFlag.UNPROGRAMMED
    assert maps.data["ep_policy"][ip_key("10.0.0.1")] == good["ep_policy"][ip_key("10.0.0.1")]  # untouched
    assert p.blocked == {"10.0.0.2": p.blocked["10.0.0.2"]} and "ENOSPC" in p.blocked["10.0.0.2"]
    assert p.full_events == 1

    # still no room: the retry changes nothing; a later apply joins the pending one (one desired
    # state, the later word winning) and fails closed with it: safe, if more than needed
    assert p.retry().blocked == ["10.0.0.2"]
    assert p.apply([ep("10.0.0.3")]).blocked == ["10.0.0.2", "10.0.0.3"]

    maps.caps["policy_cidrs"] = 10  # room again
    st = p.retry()
    assert st is not None and st.blocked == [] and p.blocked == {} and p.retry() is None
    ref_maps = SmallMaps({})
    PolicyProgrammer(ref_maps).apply([ep("10.0.0.1", from_cidr("192.0.2.0/24")),
                                      ep("10.0.0.2", from_cidr("198.51.100.0/24"), from_ids(9)), ep("10.0.0.3")])
    # the same content as a plain apply (ids may differ: the refused tries used some up)
    assert {n: len(d) for n, d in maps.data.items()} == {n: len(d) for n, d in ref_maps.data.items()}
    assert set(p.endpoints) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    i, _, flags, _ = EP_VALUE.unpack(maps.data["ep_policy"][ip_key("10.0.0.2")])
    assert i != 0 and not flags & EpPolicyFlag.UNPROGRAMMED and flags & EpPolicyFlag.INGRESS_ISOLATED

def test_a_delete_while_pending_drops_the_endpoint_from_the_retry() -> None:
    maps = SmallMaps({"policy_rules": 0})
    p = PolicyProgrammer(maps)
    assert p.apply([ep("10.0.0.5", from_ids(3))]).blocked == ["10.0.0.5"]
    p.apply([], ["10.0.0.5"])
    assert p.blocked == {} and maps.data["ep_policy"] == {}
    assert p.retry() is None


def test_other_errors_are_raised_after_the_undo() -> None:
    class Broken(SmallMaps):
        def update(self, name: str, key: bytes, value: bytes) -> None:
            if name == "ep_policy":
                raise OSError(errno.EPERM, "no")
            super().update(name, key, value)

    maps = Broken({})
    p = PolicyProgrammer(maps)
    try:
        p.apply([ep("10.0.0.6", from_ids(3))])
    except OSError as e:
        assert e.errno == errno.EPERM
    else:
        raise AssertionError("EPERM swallowed")
    assert maps.data["policy_rules"] == {} and p.blocked == {}
