"""Compiled NetworkPolicy (novanet_core.policy) -> the eBPF maps ``policy_rules``, ``policy_cidrs``
and ``ep_policy``, kept in sync incrementally.

Representation (see docs/datapath.md, "NetworkPolicy maps"):

* A **policy set** is the rule list of one isolated direction of one endpoint. Endpoints whose
  direction compiled to the same rules share one set (usually: all pods of one identity), so a
  set plays the part of the local identity in an identity pair, while still allowing two pods of
  one identity to differ (named ports resolved per pod, default-deny mirrors of /32 peers).
* ``policy_rules`` is an LPM trie keyed ``(set, peer kind, peer, protocol, port prefix)``; a port
  range becomes at most 30 aligned prefixes, "any port of a protocol" one entry, "any protocol"
  one entry that stops before the protocol byte. Peers: ANY (peer 0), IDENTITY (a pod identity),
  CIDR (a CIDR id).
* ``policy_cidrs`` (IPv4) and ``policy_cidrs_v6`` (IPv6) map every ipBlock prefix in use (cidrs
  *and* excepts) to a CIDR id, one id space for both families (the rule key's peer is the id). An
  address resolves to its longest prefix L in its family's trie; a rule ``cidr N except E`` gets
  entries for every prefix L in use with L inside N and inside no except. Prefixes of one family
  are nested or disjoint, so that is exact; a prefix never lies inside one of the other family.
* ``ep_policy`` / ``ep_policy_v6``: endpoint IP -> {ingress set, egress set, isolation flags}.

Updates are make-before-break: new rule entries, then new CIDR prefixes, then endpoint pointers,
then removals; the caller bumps the policy revision once at the end so flows re-decide.

Full maps fail closed: when a write is refused for room (``policy_rules``/``policy_cidrs`` at
``max_entries``: ENOSPC; ``ep_policy``: E2BIG), every write of that apply is undone, and each
endpoint whose policy changed gets an ``ep_policy`` entry flagged ``UNPROGRAMMED``: the datapath
drops its traffic in both directions as ``POLICY_MAP_FULL`` (never the old, maybe wider policy).
The apply is kept and tried again (:meth:`PolicyProgrammer.retry`) until it fits.
"""

from __future__ import annotations

import bisect
import errno
import ipaddress
import logging
import os
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from novanet_core.identity import fnv1a32
from novanet_core.policy import AnyPeer, CidrPeer, DirectionPolicy, EndpointPolicy, IdentityPeer, Rule
from novanet_core.protocols import IP_PROTOCOLS, protocol_name
from novanet_ebpf_policy.layouts import RULE_KEY_BITS, EpPolicyFlag, PeerKind

log = logging.getLogger(__name__)

EMPTY_SET = 0  # "isolated, no rule": a set id with no entries, so every lookup misses
# A write refused for want of room: LPM trie at max_entries (ENOSPC), hash full (E2BIG), no memory.
CAPACITY_ERRNOS = (errno.ENOSPC, errno.E2BIG, errno.ENOMEM)
PEER_BITS = 72  # set 32 + kind 8 + peer 32: every key covers at least these
PROTO_BITS = PEER_BITS + 8

_PREFIX = struct.Struct("<I")  # the trie's prefixlen is host order ...
_DATA = struct.Struct(">IBIBH")  # ... its data big-endian, so the MSB-first prefix reads in field order
RULE_VALUE = struct.Struct("<I")
CIDR_VALUE = struct.Struct("<I")
EP_KEY = struct.Struct("<I")
EP_VALUE = struct.Struct("<IIII")


def rule_key(prefixlen: int, set_id: int, kind: int, peer: int, proto: int = 0, port: int = 0) -> bytes:
    return _PREFIX.pack(prefixlen) + _DATA.pack(set_id, kind, peer, proto, port)


def decode_rule_key(k: bytes) -> tuple[int, int, int, int, int, int]:
    (plen,) = _PREFIX.unpack_from(k, 0)
    return (plen, *_DATA.unpack_from(k, 4))


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def cidr_key(net: Net) -> bytes:
    """The key of ``net`` in its family's trie (``policy_cidrs``: 4 address bytes, ``_v6``: 16)."""
    return _PREFIX.pack(net.prefixlen) + net.network_address.packed


def cidr_map(net: Net) -> str:
    return "policy_cidrs_v6" if net.version == 6 else "policy_cidrs"


def decode_cidr_key(k: bytes) -> Net:
    (plen,) = _PREFIX.unpack_from(k, 0)
    return ipaddress.ip_network((ipaddress.ip_address(bytes(k[4:])), plen))


def port_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """``[first, last]`` as aligned blocks ``(start, prefix bits)``: at most 30 for 16-bit ports."""
    out = []
    while first <= last:
        k = 16 if first == 0 else (first & -first).bit_length() - 1
        while first + (1 << k) - 1 > last:
            k -= 1
        out.append((first, 16 - k))
        first += 1 << k
    return out


def rule_ref(policy: str, origin: str) -> int:
    return fnv1a32(f"{policy} {origin}".encode()) or 1


@dataclass(frozen=True)
class TrieRule:
    """One allow rule as the trie encodes it (an IdentityPeer with n identities is n of these)."""

    kind: int  # PeerKind
    peer: int  # identity (IDENTITY), else 0
    cidr: str  # CIDR (CIDR), else ""
    excepts: tuple[str, ...]
    ports: tuple[tuple[int, int, int], ...] | None  # (protocol number, first, last); None = all
    ref: int  # rule_ref(policy, origin)


# A policy set is known by its rules: sorted and deduplicated, so equal lists share one set.
SetRules = tuple[TrieRule, ...]


def _order(r: TrieRule) -> tuple[Any, ...]:
    return (r.kind, r.peer, r.cidr, r.excepts, r.ports is not None, r.ports or (), r.ref)


def _trie_rules(r: Rule) -> list[TrieRule]:
    ports = None if r.ports is None else tuple(sorted({(IP_PROTOCOLS[p.protocol], p.first, p.last)
                                                       for p in r.ports}))
    ref = rule_ref(r.policy, r.origin)
    if isinstance(r.peer, AnyPeer):
        return [TrieRule(PeerKind.ANY, 0, "", (), ports, ref)]
    if isinstance(r.peer, IdentityPeer):
        return [TrieRule(PeerKind.IDENTITY, i, "", (), ports, ref) for i in sorted(r.peer.identities)]
    assert isinstance(r.peer, CidrPeer)
    net = ipaddress.ip_network(r.peer.cidr, strict=False)
    exc = tuple(sorted(str(ipaddress.ip_network(e, strict=False)) for e in r.peer.excepts))
    return [TrieRule(PeerKind.CIDR, 0, str(net), exc, ports, ref)]


def set_rules(d: DirectionPolicy, refs: dict[int, str] | None = None) -> SetRules | None:
    """The policy set an isolated direction needs (``None`` when it is not isolated); fills
    ``refs`` with rule ref -> "policy origin" for listings."""
    if not d.isolated:
        return None
    rules: set[TrieRule] = set()
    for r in d.rules:
        trs = _trie_rules(r)
        rules.update(trs)
        if refs is not None:
            for t in trs:
                refs[t.ref] = f"{r.policy} {r.origin}"
    return tuple(sorted(rules, key=_order))


@dataclass(frozen=True)
class _Programmed:
    """One endpoint's compiled policy and the sets its two directions point at."""

    policy: EndpointPolicy
    ingress: SetRules | None  # None: not isolated
    egress: SetRules | None

    def sets(self) -> tuple[tuple[str, SetRules | None], ...]:
        return (("ingress", self.ingress), ("egress", self.egress))


@dataclass
class _Set:
    rules: SetRules | None  # None: adopted from live maps, content unknown until matched
    entries: dict[bytes, bytes] = field(default_factory=dict)


class CidrIndex:
    """The prefixes in use, per family sorted by start address, for "which prefixes lie inside N"."""

    def __init__(self, ids: Mapping[str, int]):
        self.ids = dict(ids)
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._nets: dict[int, list[Net]] = {4: [], 6: []}
        for n in sorted((ipaddress.ip_network(c) for c in ids),
                        key=lambda n: (n.version, int(n.network_address), n.prefixlen)):
            self._starts[n.version].append(int(n.network_address))
            self._nets[n.version].append(n)

    def inside(self, n: Net) -> Iterable[Net]:
        starts = self._starts[n.version]
        lo = bisect.bisect_left(starts, int(n.network_address))
        hi = bisect.bisect_right(starts, int(n.broadcast_address))
        for net in self._nets[n.version][lo:hi]:
            if net.prefixlen >= n.prefixlen:
                yield net


def set_entries(set_id: int, rules: Iterable[TrieRule], cidrs: CidrIndex) -> dict[bytes, bytes]:
    """Every trie entry of one policy set (value: the lowest rule ref producing that key)."""
    out: dict[bytes, int] = {}

    def put(k: bytes, ref: int) -> None:
        cur = out.get(k)
        if cur is None or ref < cur:
            out[k] = ref

    for r in rules:
        if r.kind == PeerKind.CIDR:
            n = ipaddress.ip_network(r.cidr)
            excepts = [e for e in map(ipaddress.ip_network, r.excepts) if e.version == n.version]
            peers = [(PeerKind.CIDR, cidrs.ids[str(L)]) for L in cidrs.inside(n)
                     if not any(L.subnet_of(e) for e in excepts)]  # type: ignore[arg-type]
        else:
            peers = [(r.kind, r.peer)]
        for kind, peer in peers:
            if r.ports is None:
                put(rule_key(PEER_BITS, set_id, kind, peer), r.ref)
                continue
            for proto, first, last in r.ports:
                for start, bits in port_prefixes(first, last):
                    put(rule_key(PROTO_BITS + bits, set_id, kind, peer, proto, start), r.ref)
    return {k: RULE_VALUE.pack(v) for k, v in out.items()}


def _ep_value(ingress_set: int, egress_set: int, ingress: bool, egress: bool) -> bytes:
    flags = (EpPolicyFlag.INGRESS_ISOLATED if ingress else 0) | (EpPolicyFlag.EGRESS_ISOLATED if egress else 0)
    return EP_VALUE.pack(ingress_set, egress_set, int(flags), 0)


def ip_key(ip: str) -> bytes:
    """The ep_policy key of ``ip``: numeric IPv4, or (``ep_policy_v6``) the 16 IPv6 bytes."""
    if ":" in ip:
        return ipaddress.IPv6Address(ip).packed
    return EP_KEY.pack(int(ipaddress.IPv4Address(ip)))


def ep_map(ip: str) -> str:
    """The endpoint policy map of ``ip``'s family (the same value layout in both)."""
    return "ep_policy_v6" if ":" in ip else "ep_policy"


class MapIO:
    """What :class:`PolicyProgrammer` needs from the maps (the backend's MapHandles)."""

    def update(self, name: str, key: bytes, value: bytes) -> None: ...
    def delete(self, name: str, key: bytes) -> bool: ...
    def items(self, name: str) -> Iterable[tuple[bytes, bytes]]: ...


@dataclass
class ApplyStats:
    endpoints: int = 0
    sets: int = 0
    rules_added: int = 0
    rules_removed: int = 0
    cidrs_added: int = 0
    cidrs_removed: int = 0
    ep_written: int = 0
    ep_removed: int = 0
    blocked: list[str] = field(default_factory=list)  # endpoints failed closed (the maps are full)

    def changed(self) -> bool:
        return any((self.rules_added, self.rules_removed, self.cidrs_added, self.cidrs_removed, self.ep_written,
                    self.ep_removed))


class PolicyProgrammer:
    """Owns the three policy maps; :meth:`apply` takes endpoint upserts/deletes and writes diffs."""

    def __init__(self, maps: MapIO):
        self.m = maps
        self.endpoints: dict[str, _Programmed] = {}
        self.ep_values: dict[str, bytes] = {}  # ip -> ep_policy value as written
        self.sets: dict[int, _Set] = {}
        self.by_rules: dict[SetRules, int] = {}
        self.cidr_ids: dict[str, int] = {}
        self.refs: dict[int, str] = {}
        self._next_set = 1
        self._next_cidr = 1
        # Failed closed for want of room: the apply still to do, and ip -> why per endpoint.
        self._pending: tuple[list[EndpointPolicy], list[str], bool] | None = None
        self.blocked: dict[str, str] = {}
        self.full_events = 0  # applies refused for room
        self.last_full: dict[str, Any] | None = None

    # ------------------------------------------------------------------ restart
    def adopt_live(self) -> dict[str, int]:
        """Read what a previous dataplane process left in the pinned maps, so that the agent's
        full resync after a restart rewrites nothing that is already right."""
        for k, v in [*self.m.items("policy_cidrs"), *self.m.items("policy_cidrs_v6")]:
            (cid,) = CIDR_VALUE.unpack(v)
            self.cidr_ids[str(decode_cidr_key(k))] = cid
            self._next_cidr = max(self._next_cidr, cid + 1)
        for k, v in self.m.items("policy_rules"):
            sid = decode_rule_key(k)[1]
            self.sets.setdefault(sid, _Set(None)).entries[bytes(k)] = bytes(v)
            self._next_set = max(self._next_set, sid + 1)
        eps = [(str(ipaddress.IPv4Address(EP_KEY.unpack(k)[0])), v) for k, v in self.m.items("ep_policy")]
        eps += [(str(ipaddress.IPv6Address(bytes(k))), v) for k, v in self.m.items("ep_policy_v6")]
        for ip, v in eps:
            self.ep_values[ip] = bytes(v)
            a, b, _, _ = EP_VALUE.unpack(v)
            self._next_set = max(self._next_set, a + 1, b + 1)
        return {"sets": len(self.sets), "cidrs": len(self.cidr_ids), "endpoints": len(self.ep_values)}

    # ------------------------------------------------------------------ apply
    def apply(self, upserts: Sequence[EndpointPolicy], deletes: Iterable[str] = (), full: bool = False) -> ApplyStats:
        """Program ``upserts`` (``EndpointPolicy.ip`` set, either family), drop ``deletes``; ``full``
        replaces everything. Maps without room: the endpoints concerned fail closed (module doc)."""
        ups, dels, full = self._merge(list(upserts), list(deletes), full)
        undo: list[tuple[str, bytes, bytes | None]] = []
        try:
            st = self._apply(ups, dels, full, undo)
        except OSError as e:
            self._undo(undo)
            if e.errno not in CAPACITY_ERRNOS:
                raise
            return self._fail_closed(ups, dels, full, e)
        self._pending = None
        self.blocked = {}
        return st

    def retry(self) -> ApplyStats | None:
        """Try a refused apply again (room may have come back); None if there is none."""
        return None if self._pending is None else self.apply([], [], False)

    def _merge(self, ups: list[EndpointPolicy], dels: list[str],
               full: bool) -> tuple[list[EndpointPolicy], list[str], bool]:
        """This apply on top of one still pending (refused for room): the later word wins."""
        if self._pending is None or full:
            return ups, dels, full
        pu, pd, pfull = self._pending
        by = {u.ip: u for u in pu}
        for ip in dels:
            by.pop(ip, None)
        for u in ups:
            by[u.ip] = u
        gone = (set(pd) - set(by)) | set(dels)
        return list(by.values()), sorted(gone), pfull

    def _write(self, undo: list[tuple[str, bytes, bytes | None]], name: str, key: bytes, value: bytes,
               prev: bytes | None) -> None:
        self.m.update(name, key, value)
        undo.append((name, key, prev))

    def _undo(self, undo: list[tuple[str, bytes, bytes | None]]) -> None:
        for name, key, prev in reversed(undo):
            try:
                if prev is None:
                    self.m.delete(name, key)
                else:
                    self.m.update(name, key, prev)
            except OSError as e:  # restoring a value in place needs no room; report, go on
                log.error("policy: undoing a write to %s failed: %s", name, e)

    def _fail_closed(self, ups: list[EndpointPolicy], dels: list[str], full: bool, e: OSError) -> ApplyStats:
        why = f"policy maps full: {os.strerror(e.errno or 0)} ({errno.errorcode.get(e.errno or 0, e.errno)})"
        self._pending = (ups, dels, full)
        self.full_events += 1
        self.last_full = {"time": time.time(), "reason": why, "endpoints": len(ups)}
        st = ApplyStats()
        value = EP_VALUE.pack(EMPTY_SET, EMPTY_SET, int(EpPolicyFlag.INGRESS_ISOLATED | EpPolicyFlag.EGRESS_ISOLATED
                                                        | EpPolicyFlag.UNPROGRAMMED), 0)
        for u in ups:
            assert u.ip is not None
            cur = self.endpoints.get(u.ip)
            if cur is not None and cur.policy == u and u.ip not in self.blocked:
                continue  # programmed as wanted already: nothing of it is missing
            if self.ep_values.get(u.ip) != value:
                # A new endpoint with no room in ep_policy either raises here: its ADD fails.
                self.m.update(ep_map(u.ip), ip_key(u.ip), value)
                self.ep_values[u.ip] = value
                st.ep_written += 1
            self.blocked[u.ip] = why
        log.error("%s: %d endpoint(s) fail closed (POLICY_MAP_FULL) until it fits: %s", why, len(self.blocked),
                  ", ".join(sorted(self.blocked)[:10]))
        st.blocked = sorted(self.blocked)
        return st

    def _apply(self, upserts: Sequence[EndpointPolicy], deletes: Iterable[str], full: bool,
               undo: list[tuple[str, bytes, bytes | None]]) -> ApplyStats:
        st = ApplyStats()
        desired = {} if full else dict(self.endpoints)
        for ip in deletes:
            desired.pop(ip, None)
        new = [_Programmed(ep, set_rules(ep.ingress, self.refs), set_rules(ep.egress, self.refs)) for ep in upserts]
        for prog in new:
            assert prog.policy.ip is not None
            desired[prog.policy.ip] = prog
        st.endpoints = len(desired)

        # 1. which rule lists are needed, and by how many directions
        wanted: dict[SetRules, int] = {}
        for prog in desired.values():
            for _, rules in prog.sets():
                if rules is not None:
                    wanted[rules] = wanted.get(rules, 0) + 1
        new_cidrs = self._cidr_ids(wanted)  # 2.
        cidr_changed = set(new_cidrs) != set(self.cidr_ids)
        index = CidrIndex(new_cidrs)
        assign = self._assign_sets(wanted, new, index)  # 3.

        # 4. entries per set: recompute the sets whose list changed, and CIDR sets if prefixes did
        new_entries: dict[int, dict[bytes, bytes]] = {}
        for rules, sid in assign.items():
            cur = self.sets.get(sid)
            has_cidr = any(r.kind == PeerKind.CIDR for r in rules)
            if cur is not None and cur.rules == rules and not (cidr_changed and has_cidr):
                new_entries[sid] = cur.entries
            else:
                new_entries[sid] = set_entries(sid, rules, index)
        st.sets = len(new_entries)

        new_values = self._write_maps(st, undo, desired, assign, new_entries, new_cidrs)  # 5.

        # 6. remember
        self.endpoints = desired
        self.ep_values = new_values
        self.cidr_ids = new_cidrs
        self.sets = {sid: _Set(rules, new_entries[sid]) for rules, sid in assign.items()}
        self.by_rules = dict(assign)
        return st

    def _cidr_ids(self, wanted: Mapping[SetRules, int]) -> dict[str, int]:
        """2. CIDR prefixes in use (cidrs and excepts of every wanted rule); ids stay per prefix."""
        prefixes: set[str] = set()
        for rules in wanted:
            for r in rules:
                if r.kind == PeerKind.CIDR:
                    prefixes.add(r.cidr)
                    prefixes.update(r.excepts)
        new_cidrs = {}
        for p in sorted(prefixes):
            cid = self.cidr_ids.get(p)
            if cid is None:
                cid, self._next_cidr = self._next_cidr, self._next_cidr + 1
            new_cidrs[p] = cid
        return new_cidrs

    def _assign_sets(self, wanted: Mapping[SetRules, int], new: Sequence[_Programmed],
                     index: CidrIndex) -> dict[SetRules, int]:
        """3. a set id per wanted rule list: existing, adopted (same entries), reused in place (an
        old list nobody wants any more, taken over by one that replaced it), or new."""
        assign: dict[SetRules, int] = {}
        free_old = [sid for sid, s in self.sets.items() if s.rules is not None and s.rules not in wanted]
        moved_from: dict[SetRules, list[int]] = {}
        for prog in new:
            old = self.endpoints.get(prog.policy.ip or "")
            if old is None:
                continue
            for od, nd in ((old.ingress, prog.ingress), (old.egress, prog.egress)):
                if od is not None and nd is not None and od != nd and od in self.by_rules:
                    moved_from.setdefault(nd, []).append(self.by_rules[od])
        # restart: a live set with exactly the entries this list needs keeps its id (compared with
        # the set id zeroed)
        orphans = {frozenset((_reset_set(k), v) for k, v in s.entries.items()): sid
                   for sid, s in self.sets.items() if s.rules is None}
        taken: set[int] = {EMPTY_SET}
        for rules in sorted(wanted, key=lambda r: (len(r), [_order(x) for x in r])):
            sid = EMPTY_SET if not rules else self.by_rules.get(rules)
            if sid is None and orphans:
                osid = orphans.get(frozenset(set_entries(0, rules, index).items()))
                if osid is not None and osid not in taken:
                    sid = osid
            if sid is None:
                for osid in moved_from.get(rules, ()):
                    if osid in free_old and osid not in taken:
                        sid = osid
                        break
            if sid is None:
                sid, self._next_set = self._next_set, self._next_set + 1
            assign[rules] = sid
            taken.add(sid)
        return assign

    def _write_maps(self, st: ApplyStats, undo: list[tuple[str, bytes, bytes | None]],
                    desired: Mapping[str, _Programmed], assign: Mapping[SetRules, int],
                    new_entries: Mapping[int, dict[bytes, bytes]], new_cidrs: Mapping[str, int]) -> dict[str, bytes]:
        """5. make before break: new rules and CIDR ids first, then the endpoints that use them,
        then what nobody uses any more. Returns the endpoints' new ``ep_policy`` values."""
        for sid, ents in new_entries.items():
            old = self.sets[sid].entries if sid in self.sets else {}
            if ents is old:
                continue
            for k, v in ents.items():
                if old.get(k) != v:
                    self._write(undo, "policy_rules", k, v, old.get(k))
                    st.rules_added += 1
        for p, cid in new_cidrs.items():
            if self.cidr_ids.get(p) != cid:
                prev = CIDR_VALUE.pack(self.cidr_ids[p]) if p in self.cidr_ids else None
                net = ipaddress.ip_network(p)
                self._write(undo, cidr_map(net), cidr_key(net), CIDR_VALUE.pack(cid), prev)
                st.cidrs_added += 1
        new_values: dict[str, bytes] = {}
        for ip, prog in desired.items():
            i = assign[prog.ingress] if prog.ingress is not None else 0
            e = assign[prog.egress] if prog.egress is not None else 0
            new_values[ip] = _ep_value(i, e, prog.ingress is not None, prog.egress is not None)
            if self.ep_values.get(ip) != new_values[ip]:
                self._write(undo, ep_map(ip), ip_key(ip), new_values[ip], self.ep_values.get(ip))
                st.ep_written += 1
        for ip in set(self.ep_values) - set(new_values):
            self.m.delete(ep_map(ip), ip_key(ip))
            st.ep_removed += 1
        for p in set(self.cidr_ids) - set(new_cidrs):
            net = ipaddress.ip_network(p)
            self.m.delete(cidr_map(net), cidr_key(net))
            st.cidrs_removed += 1
        for sid, s in self.sets.items():
            keep = new_entries.get(sid, {})
            for k in s.entries:
                if k not in keep:
                    self.m.delete("policy_rules", k)
                    st.rules_removed += 1
        return new_values

    # ------------------------------------------------------------------ queries
    def set_users(self) -> dict[int, list[tuple[str, str, str]]]:
        """set id -> [(ip, pod, direction)]."""
        out: dict[int, list[tuple[str, str, str]]] = {}
        for ip, prog in self.endpoints.items():
            for name, rules in prog.sets():
                if rules is not None:
                    out.setdefault(self.by_rules[rules], []).append((ip, prog.policy.pod, name))
        return out

    def rule_count(self) -> int:
        return sum(len(s.entries) for s in self.sets.values())

    def explain(self, policy_dir: int, src_ip: str, dst_ip: str) -> tuple[str, list[str]]:
        """Why a POLICY_DENIED drop happened: a sentence and the policies that isolate that side."""
        if policy_dir == 3:
            return "defaultDeny: the endpoint has no compiled policy in the datapath yet", []
        if policy_dir not in (1, 2):
            return "", []
        ip, name = (src_ip, "egress") if policy_dir == 1 else (dst_ip, "ingress")
        if ip in self.blocked:
            return f"{name} of {ip}: its policy could not be programmed ({self.blocked[ip]}); failed closed", []
        prog = self.endpoints.get(ip)
        if prog is None:
            return f"{name} of {ip}: no policy allowed it", []
        d = prog.policy.direction(name)
        why = f"isolated by {', '.join(d.selected_by)}" if d.selected_by else "isolated by defaultDeny"
        return f"{name} of {prog.policy.pod} {why}: no policy allowed it", list(d.selected_by)


def _reset_set(k: bytes) -> bytes:
    """The key with its set id zeroed (compare live entries to freshly computed ones by shape)."""
    return k[:4] + b"\x00\x00\x00\x00" + k[8:]


def describe_entry(k: bytes, v: bytes, refs: Mapping[int, str], cidrs_by_id: Mapping[int, str]) -> dict[str, Any]:
    plen, sid, kind, peer, proto, port = decode_rule_key(k)
    (ref,) = RULE_VALUE.unpack(v)
    d: dict[str, Any] = {"set": sid, "peer_kind": PeerKind(kind).name.lower(), "prefixlen": plen}
    if kind == PeerKind.IDENTITY:
        d["peer_identity"] = peer
    elif kind == PeerKind.CIDR:
        d["peer_cidr"] = cidrs_by_id.get(peer, f"#{peer}")
    if plen <= PEER_BITS:
        d.update(protocol="*", ports="*")
    else:
        bits = plen - PROTO_BITS
        last = port + (1 << (16 - bits)) - 1
        d["protocol"] = protocol_name(proto)
        d["ports"] = "*" if bits == 0 else (str(port) if bits == 16 else f"{port}-{last}")
    name = refs.get(ref, "")
    d["policy"], _, d["origin"] = name.partition(" ")
    return d


assert RULE_KEY_BITS == 96 and len(rule_key(0, 0, 0, 0)) == 16
