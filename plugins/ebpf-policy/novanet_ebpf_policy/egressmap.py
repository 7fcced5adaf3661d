"""The ``egress`` map: what happens to traffic leaving the cluster, per source identity and CIDR.

Compiled from the same NetworkPolicy the datapath already holds (the endpoints' egress
:class:`~novanet_core.policy.DirectionPolicy`) and from ``egress.masqueradeEnabled``:

* an identity whose egress is **not** isolated has no entries of its own; the any-source entry
  (identity 0, ``0.0.0.0/0``) applies: SNAT to the node address when masquerade is on, else ALLOW.
  It carries the DEFAULT flag, so NetworkPolicy's own checks (and the defaultDeny fallback for an
  endpoint not programmed yet) still run behind it;
* an identity whose egress **is** isolated gets one entry per prefix its ipBlock rules name
  (``cidr`` and every ``except``) plus ``0.0.0.0/0``. The decision for prefix P holds for the
  addresses in P that no longer prefix in the set covers, so it is exact: a rule admits those
  addresses iff its cidr contains P and none of its excepts does. ALLOW (or SNAT) when a rule
  without ports admits them; ALLOW with the PORTS flag when only rules with ports do (the pod's
  policy set in ``policy_rules`` then decides the port); DENY otherwise. ``podSelector`` peers never
  match an address outside the cluster, so they play no part here.

Each entry owns a slot of ``egress_stats`` (per-CPU packets and bytes of every packet that matched
it); a slot stays with its (identity, CIDR) key across recompiles and dataplane restarts, and is
zeroed when it is handed to a new key.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from novanet_core.policy import AnyPeer, CidrPeer, DirectionPolicy, EndpointPolicy, Rule
from novanet_core.protocols import IP_PROTOCOLS, protocol_name
from novanet_ebpf_policy.layouts import EGRESS_RULES, EgressAction, EgressFlag

ANY_SOURCE = 0
WORLD = ipaddress.IPv4Network("0.0.0.0/0")

_PREFIX = struct.Struct("<I")  # the trie's prefixlen is host order, its data big-endian
KEY = struct.Struct(">II")  # src_identity, dst_ip
VALUE = struct.Struct("<BBHI4s")  # action, flags, pad, rule slot, snat_ip (network order)
COUNTER = struct.Struct("<QQ")


def egress_key(src_identity: int, cidr: str) -> bytes:
    net = ipaddress.IPv4Network(cidr)
    return _PREFIX.pack(32 + net.prefixlen) + KEY.pack(src_identity, int(net.network_address))


def decode_key(k: bytes) -> tuple[int, str]:
    (plen,) = _PREFIX.unpack_from(k, 0)
    src, ip = KEY.unpack_from(k, 4)
    return src, str(ipaddress.IPv4Network((ip, plen - 32)))


@dataclass(frozen=True)
class EgressEntry:
    src_identity: int  # 0 = any source
    cidr: str
    action: EgressAction
    flags: EgressFlag
    snat_ip: str  # "" unless SNAT
    policies: tuple[str, ...]  # "namespace/name" of the policies behind it ("" for the any-source entry)
    origin: str  # which rule: "egress[0]", "egress[0] except", "isolated", "egress.masqueradeEnabled", ...
    protocol: str = "*"  # what PORTS entries admit (display)
    ports: str = "*"

    @property
    def key(self) -> tuple[int, str]:
        return self.src_identity, self.cidr

    def value(self, slot: int) -> bytes:
        snat = ipaddress.IPv4Address(self.snat_ip).packed if self.snat_ip else bytes(4)
        return VALUE.pack(int(self.action), int(self.flags), 0, slot, snat)


@dataclass(frozen=True)
class _Block:
    net: ipaddress.IPv4Network
    excepts: tuple[ipaddress.IPv4Network, ...]
    ports: tuple[tuple[int, int, int], ...] | None
    name: str  # "namespace/name origin"

    def admits(self, p: ipaddress.IPv4Network) -> bool:
        return p.subnet_of(self.net) and not any(p.subnet_of(e) for e in self.excepts)


def _blocks(d: DirectionPolicy) -> list[_Block]:
    out = []
    for r in d.rules:
        if isinstance(r.peer, AnyPeer):
            net, exc = WORLD, ()
        elif isinstance(r.peer, CidrPeer):
            n = ipaddress.ip_network(r.peer.cidr, strict=False)
            if n.version != 4:
                continue  # an IPv4 datapath: an IPv6 block matches no packet
            net = n  # type: ignore[assignment]
            exc = tuple(e for e in (ipaddress.ip_network(x, strict=False) for x in r.peer.excepts)
                        if e.version == 4)  # type: ignore[misc]
        else:
            continue  # pods only: never an address outside the cluster
        ports = None if r.ports is None else tuple((IP_PROTOCOLS[p.protocol], p.first, p.last) for p in r.ports)
        out.append(_Block(net, exc, ports, f"{r.policy} {r.origin}"))  # type: ignore[arg-type]
    return out


def _split(name: str) -> tuple[str, str]:
    policy, _, origin = name.partition(" ")
    return policy, origin


def _ports_display(blocks: Iterable[_Block]) -> tuple[str, str]:
    ranges = sorted({p for b in blocks for p in (b.ports or ())})
    protos = sorted({protocol_name(p) for p, _, _ in ranges})

    def one(first: int, last: int) -> str:
        return "*" if (first, last) == (0, 65535) else str(first) if first == last else f"{first}-{last}"

    if len(protos) == 1:
        return protos[0], ",".join(one(f, la) for _, f, la in ranges)
    return ",".join(protos), ",".join(f"{protocol_name(p)}/{one(f, la)}" for p, f, la in ranges)


def identity_entries(identity: int, d: DirectionPolicy, masquerade: bool, snat_ip: str) -> list[EgressEntry]:
    """The entries of one isolated identity (see the module docstring for the decision per prefix)."""
    blocks = _blocks(d)
    prefixes = {WORLD} | {b.net for b in blocks} | {e for b in blocks for e in b.excepts}
    allow = EgressAction.SNAT if masquerade else EgressAction.ALLOW
    snat = snat_ip if masquerade else ""
    out = []
    for p in sorted(prefixes, key=lambda n: (n.prefixlen, int(n.network_address))):
        admitting = [b for b in blocks if b.admits(p)]
        whole = [b for b in admitting if b.ports is None]
        if whole:
            pol, origin = _split(whole[0].name)
            out.append(EgressEntry(identity, str(p), allow, EgressFlag(0), snat, (pol,), origin))
        elif admitting:
            proto, ports = _ports_display(admitting)
            pols = tuple(sorted({_split(b.name)[0] for b in admitting}))
            origins = ",".join(sorted({_split(b.name)[1] for b in admitting}))
            out.append(EgressEntry(identity, str(p), allow, EgressFlag.PORTS, snat, pols, origins, proto, ports))
        else:
            carve = [b for b in blocks if p in b.excepts and p.subnet_of(b.net)]
            if carve:
                pol, origin = _split(carve[0].name)
                out.append(EgressEntry(identity, str(p), EgressAction.DENY, EgressFlag(0), "", (pol,),
                                       f"{origin} except"))
            else:
                why = "isolated" if p == WORLD else "no rule admits it"
                out.append(EgressEntry(identity, str(p), EgressAction.DENY, EgressFlag(0), "",
                                       tuple(d.selected_by) or ("defaultDeny",), why))
    return out


def compile_egress(endpoints: Iterable[EndpointPolicy], masquerade: bool, snat_ip: str) -> list[EgressEntry]:
    """Every entry of the egress map for these local endpoints."""
    allow = EgressAction.SNAT if masquerade else EgressAction.ALLOW
    snat = snat_ip if masquerade else ""
    default = EgressEntry(ANY_SOURCE, str(WORLD), allow, EgressFlag.DEFAULT, snat, ("",), "egress.masqueradeEnabled")
    by_id: dict[int, set[tuple[Rule, ...]]] = {}
    dirs: dict[int, DirectionPolicy] = {}
    for ep in endpoints:
        if ep.egress.isolated and ep.identity:
            by_id.setdefault(ep.identity, set()).add(ep.egress.rules)
            dirs.setdefault(ep.identity, ep.egress)
    out = [default]
    for ident in sorted(by_id):
        if len(by_id[ident]) > 1:
            # Pods of one identity with different egress rules (per-pod mirrors in defaultDeny mode):
            # the map cannot tell them apart, so it leaves the whole decision to each pod's policy set.
            out.append(EgressEntry(ident, str(WORLD), allow, EgressFlag.PORTS, snat, tuple(dirs[ident].selected_by),
                                   "per-pod rules differ: each pod's policy decides"))
            continue
        out += identity_entries(ident, dirs[ident], masquerade, snat_ip)
    return out


class EgressProgrammer:
    """Owns ``egress`` and the slot of each entry in ``egress_stats``; writes only differences."""

    def __init__(self, maps: Any, ncpu: int):
        self.m = maps
        self.ncpu = ncpu
        self.entries: dict[tuple[int, str], EgressEntry] = {}
        self.slots: dict[tuple[int, str], int] = {}
        self.values: dict[tuple[int, str], bytes] = {}

    def adopt_live(self) -> int:
        """After a restart: keep every key's slot (and so its counters) until the next apply."""
        for k, v in self.m.items("egress"):
            key = decode_key(bytes(k))
            self.slots[key] = VALUE.unpack(bytes(v))[3]
            self.values[key] = bytes(v)
        return len(self.slots)

    def apply(self, entries: list[EgressEntry]) -> dict[str, int]:
        want = {e.key: e for e in entries}
        if len(want) > EGRESS_RULES:
            raise ValueError(f"egress: {len(want)} entries exceed the map's {EGRESS_RULES}")
        kept = {s for k, s in self.slots.items() if k in want}
        # never-used slots first, so a slot an entry about to be removed still counts into is reused last
        unused = set(range(EGRESS_RULES)) - set(self.slots.values())
        free = sorted(set(self.slots.values()) - kept, reverse=True) + sorted(unused, reverse=True)
        written = removed = 0
        new_slots: dict[tuple[int, str], int] = {}
        for key, e in want.items():
            slot = self.slots.get(key)
            if slot is None:
                slot = free.pop()
                self._zero(slot)  # a slot another key used: its counts are not this rule's
            new_slots[key] = slot
            val = e.value(slot)
            if self.values.get(key) != val:
                self.m.update("egress", egress_key(*key), val)
                self.values[key] = val
                written += 1
        for key in set(self.values) - set(want):
            self.m.delete("egress", egress_key(*key))
            del self.values[key]
            removed += 1
        self.slots, self.entries = new_slots, want
        return {"written": written, "removed": removed, "entries": len(want)}

    def _zero(self, slot: int) -> None:
        self.m.update("egress_stats", slot.to_bytes(4, "little"), bytes(COUNTER.size * self.ncpu))

    def counters(self, slot: int) -> tuple[int, int]:
        return self.m.counter_sum("egress_stats", slot)

    def rows(self, labels: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
        """The map as ``novanetctl egress`` shows it, with the live counters."""
        out = []
        for key in sorted(self.entries, key=lambda k: (k[0], ipaddress.IPv4Network(k[1]).prefixlen,
                                                       int(ipaddress.IPv4Network(k[1]).network_address))):
            e = self.entries[key]
            pk, by = self.counters(self.slots[key])
            ns, _, name = e.policies[0].partition("/") if e.policies and "/" in e.policies[0] else ("", "", "")
            out.append({"namespace": ns, "name": name or ",".join(p for p in e.policies if p),
                        "policies": [p for p in e.policies if p], "origin": e.origin,
                        "src_identity": e.src_identity, "src_labels": (labels or {}).get(e.src_identity, ""),
                        "dst_cidr": e.cidr, "protocol": e.protocol, "port": e.ports,
                        "action": e.action.name, "ports_from_policy": bool(e.flags & EgressFlag.PORTS),
                        "default": bool(e.flags & EgressFlag.DEFAULT), "snat_ip": e.snat_ip, "rule": self.slots[key],
                        "packets": pk, "bytes": by})
        return out
