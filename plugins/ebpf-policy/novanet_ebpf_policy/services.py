"""Service frontends -> the load-balancer maps (``services``, ``backends``, ``lb_members``,
``service_meta``; an IPv6 frontend's in ``services6``, ``backends6``, ``lb_members6``), read back
from the live maps, and the kube-proxy compatibility set.

A frontend's backends live in a *bank* of slots keyed ``(bank, slot)``. Every change writes a
complete new bank first and then switches the frontend's entry to it in one map update, so a
program never reads a half-written list; the old bank is removed afterwards. Upserting what the
maps already hold writes nothing (the agent resends everything after a restart).

Full maps fail closed: a frontend whose bank does not fit (``backends``, ``lb_members`` or
``service_meta`` at capacity) gets an entry without backends flagged ``UNPROGRAMMED``, which the
programs refuse as ``SERVICE_MAP_FULL`` (never left on its old backends); one the ``services`` map
itself has no room for is counted in CONFIG ``SERVICES_UNPROGRAMMED``, while which every
``serviceCIDR`` address without a frontend is refused. The upsert raises ``ServiceMapsFull`` (the
agent logs it) and ``retry()`` programs the blocked frontends once there is room.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from novanet_core.backends import ConfigError
from novanet_core.protocols import IP_PROTOCOLS, protocol_name
from novanet_core.types import ServiceBackend, ServiceFrontend
from novanet_ebpf_policy import layouts
from novanet_ebpf_policy.layouts import (
    Backend6Value,
    BackendFlag,
    BackendKey,
    BackendValue,
    ConfigKey,
    Flow6Key,
    FlowKey,
    FrontendKind,
    KpBackend6Key,
    KpBackendKey,
    KpBackendValue,
    Member6Key,
    MemberKey,
    MemberValue,
    Nat6Value,
    NatFlag,
    NatValue,
    Service6Key,
    ServiceKey,
    ServiceMeta,
    ServiceValue,
    SvcFlag,
    SvcStat,
    sctp_crc_powers,
)
from novanet_ebpf_policy.maps import MapHandles

log = logging.getLogger(__name__)

KEY_MAX = ctypes.sizeof(ServiceMeta) - ServiceMeta.key.offset  # bytes of ServiceFrontend.key
_KINDS = {"ClusterIP": FrontendKind.CLUSTER_IP, "NodePort": FrontendKind.NODE_PORT}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
_U32 = 0xFFFFFFFF
# A hash map at max_entries refuses an insert with E2BIG; without preallocation a failed element
# allocation is ENOMEM.
_FULL_ERRNOS = (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)


class ServiceMapsFull(RuntimeError):
    """A frontend did not fit the service maps: it fails closed until a retry programs it."""


def configure_size(frontends: int) -> None:
    """Size the load-balancer maps (``bpf.serviceMapSize``) before the programs are compiled."""
    for name, n in (("services", frontends), ("service_meta", frontends), ("backends", 4 * frontends),
                    ("lb_members", 4 * frontends), ("services6", frontends), ("backends6", 4 * frontends),
                    ("lb_members6", 4 * frontends)):
        m = layouts.MAPS[name]
        if m.spec.max_entries != n:
            layouts.MAPS[name] = dataclasses.replace(m, spec=dataclasses.replace(m.spec, max_entries=n))


def _num(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _ip(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


@dataclass(frozen=True)
class _Family:
    """One IP family's load-balancer maps and layouts (``service_meta`` is shared)."""

    version: int
    services: str
    backends: str
    members: str
    key: type[ServiceKey] | type[Service6Key]
    backend: type[BackendValue] | type[Backend6Value]
    member: type[MemberKey] | type[Member6Key]
    revnat: str  # per-packet translations, keyed by the flow key
    flow: type[FlowKey] | type[Flow6Key]
    nat: type[NatValue] | type[Nat6Value]

    def addr(self, ip: str) -> Any:
        """``ip`` as the layouts' ``ip`` field holds it (host-order u32; 16 network-order bytes)."""
        if self.version == 4:
            return _num(ip)
        return (ctypes.c_uint8 * 16).from_buffer_copy(ipaddress.IPv6Address(ip).packed)

    def text(self, field: Any) -> str:
        return _ip(field) if self.version == 4 else str(ipaddress.IPv6Address(bytes(field)))

    def ident(self, field: Any) -> int | bytes:
        """A hashable form of an ``ip`` field."""
        return field if self.version == 4 else bytes(field)


V4 = _Family(4, "services", "backends", "lb_members", ServiceKey, BackendValue, MemberKey, "revnat", FlowKey, NatValue)
V6 = _Family(6, "services6", "backends6", "lb_members6", Service6Key, Backend6Value, Member6Key, "revnat6", Flow6Key,
             Nat6Value)
FAMILIES = (V4, V6)


def family_of(ip: str) -> _Family | None:
    try:
        return V4 if ipaddress.ip_address(ip).version == 4 else V6
    except ValueError:
        return None


def _frontend_flags(fe: ServiceFrontend) -> SvcFlag:
    flags = SvcFlag(0)
    if fe.kind == "NodePort":
        flags |= SvcFlag.NODEPORT
    if fe.external_local:
        flags |= SvcFlag.EXTERNAL_LOCAL
    if fe.affinity_timeout > 0:
        flags |= SvcFlag.AFFINITY
    return flags


def _backend_flags(b: ServiceBackend) -> int:
    f = BackendFlag(0)
    if b.ready:
        f |= BackendFlag.READY
    if b.serving:
        f |= BackendFlag.SERVING
    if b.terminating:
        f |= BackendFlag.TERMINATING
    if b.local:
        f |= BackendFlag.LOCAL
    return int(f)


def parse_key(key: str) -> tuple[str, str, str]:
    """``ns/name:port/PROTO[/nodeport]`` -> (namespace, name, port name or "" when numeric)."""
    ns, _, rest = key.partition("/")
    name, _, port = rest.partition(":")
    port = port.split("/", 1)[0]
    return ns, name, "" if port.isdigit() else port


@dataclass
class _Live:
    """What the maps hold for one frontend (the programmer's mirror, rebuilt from the maps)."""

    key: str
    map_key: bytes
    value: ServiceValue
    slots: list[bytes]  # BackendValue (Backend6Value) bytes, slot order
    family: _Family = V4


class ServiceProgrammer:
    def __init__(self, maps: MapHandles):
        self.m = maps
        self.live: dict[str, _Live] = {}
        self.blocked: dict[str, ServiceFrontend] = {}  # failed closed for want of room, retried
        self.unprogrammed: set[str] = set()  # ... of which the services map holds no entry at all
        self.full_events = 0
        self.last_full: dict[str, Any] | None = None
        self._next_id = 1
        self._next_bank = 1
        self.adopt()

    # ------------------------------------------------------------------ restart
    def adopt(self) -> dict[str, int]:
        """Rebuild the mirror from the live maps; remove banks no frontend points at (a change
        interrupted between writing its new bank and removing the old one)."""
        meta = {int.from_bytes(k, "little"): ServiceMeta.from_buffer_copy(v) for k, v in self.m.items("service_meta")}
        self.live.clear()
        used_ids: set[int] = set()
        used_banks: set[int] = set()
        orphans = removed = 0
        for fam in FAMILIES:
            slots: dict[int, dict[int, bytes]] = {}
            for k, v in self.m.items(fam.backends):
                bk = BackendKey.from_buffer_copy(k)
                slots.setdefault(bk.bank, {})[bk.slot] = v
            banks: set[int] = set()
            for k, v in self.m.items(fam.services):
                sv = ServiceValue.from_buffer_copy(v)
                md = meta.get(sv.id)
                if md is None:  # a frontend we cannot name: nobody can update or delete it
                    self.m.delete(fam.services, k)
                    orphans += 1
                    continue
                key = bytes(md.key).rstrip(b"\0").decode(errors="replace")
                bank = slots.get(sv.bank, {})
                self.live[key] = _Live(key, k, sv, [bank[i] for i in range(sv.total) if i in bank], fam)
                used_ids.add(sv.id)
                banks.add(sv.bank)
            for bank, entries in slots.items():
                if bank not in banks:
                    for slot in entries:
                        self.m.delete(fam.backends, BackendKey(bank=bank, slot=slot))
                        removed += 1
            for k in list(self.m.keys(fam.members)):
                if fam.member.from_buffer_copy(k).bank not in banks:
                    self.m.delete(fam.members, k)
            used_banks |= banks
        for i in meta:
            if i not in used_ids:
                self.m.delete("service_meta", i.to_bytes(4, "little"))
        self._next_id = max(used_ids, default=0) + 1
        self._next_bank = max(used_banks, default=0) + 1
        # what had no room is not known after a restart: the agent resends every frontend when it
        # reconnects, and whatever still does not fit fails closed again
        self.m.config_set(ConfigKey.SERVICES_UNPROGRAMMED, 0)
        return {"frontends": len(self.live), "stale_slots_removed": removed, "orphans_removed": orphans}

    def _alloc(self, attr: str, in_use: set[int]) -> int:
        n = getattr(self, attr)
        while n == 0 or n in in_use:
            n = (n + 1) & _U32
        setattr(self, attr, (n + 1) & _U32)
        return n

    # ------------------------------------------------------------------ writes
    def upsert(self, fe: ServiceFrontend) -> dict[str, Any]:
        if len(fe.key.encode()) > KEY_MAX:
            raise ConfigError(f"frontend.key: longer than {KEY_MAX} bytes")
        fam = family_of(fe.ip)
        if fam is None:
            raise ConfigError(f"frontend.ip: {fe.ip!r} is not an IP address")
        for i, b in enumerate(fe.backends):
            if family_of(b.ip) is not fam:
                raise ConfigError(f"frontend.backends[{i}].ip: {b.ip!r} is not an IPv{fam.version} address "
                                  f"(the frontend's family)")
        map_key = bytes(fam.key(ip=fam.addr(fe.ip), port=fe.port, protocol=IP_PROTOCOLS[fe.protocol]))
        holder = next((k for k, lv in self.live.items() if lv.map_key == map_key and k != fe.key), None)
        if holder is not None:
            raise ConfigError(f"frontend.ip: {fe.ip}:{fe.port}/{fe.protocol} is already frontend {holder!r}")
        # Selectable first, then the rest (listed, never picked). Selectable: ready and not
        # terminating; when there is none, serving terminating ones (kube-proxy's fallback for a
        # Service whose every endpoint is going away: better than refusing every connection).
        pick = [b.ready and not b.terminating for b in fe.backends]
        if not any(pick):
            pick = [b.serving and b.terminating for b in fe.backends]
        ordered = [b for b, p in zip(fe.backends, pick, strict=True) if p] + \
                  [b for b, p in zip(fe.backends, pick, strict=True) if not p]
        count = sum(pick)
        slots = [bytes(fam.backend(ip=fam.addr(b.ip), port=b.port, flags=_backend_flags(b))) for b in ordered]
        flags = _frontend_flags(fe)
        old = self.live.get(fe.key)
        if old is not None and old.family is fam and old.map_key == map_key and old.slots == slots and old.value.count == count \
                and old.value.flags == int(flags) and old.value.affinity_timeout == fe.affinity_timeout:
            return {"key": fe.key, "changed": False}
        fid = old.value.id if old else self._alloc("_next_id", {lv.value.id for lv in self.live.values()})
        bank = self._alloc("_next_bank", {lv.value.bank for lv in self.live.values()})
        written: list[tuple[str, object]] = []
        value = ServiceValue(id=fid, bank=bank, count=count, total=len(slots), flags=int(flags),
                             affinity_timeout=fe.affinity_timeout)
        try:
            for i, s in enumerate(slots):  # 1. the new bank, complete
                written.append((fam.backends, BackendKey(bank=bank, slot=i)))
                self.m.update(fam.backends, BackendKey(bank=bank, slot=i), s)
            for i, b in enumerate(ordered[:count]):
                mk = fam.member(bank=bank, ip=fam.addr(b.ip), port=b.port)
                written.append((fam.members, mk))
                self.m.update(fam.members, mk, MemberValue(slot=i))
            self._write_meta(fid, fe)
            self.m.update(fam.services, map_key, value)  # 2. the switch: one map update
        except OSError as e:
            if e.errno not in _FULL_ERRNOS:
                raise
            for name, k in written:
                self.m.delete(name, k)
            self._fail_closed(fe, fam, map_key, fid, flags, old, e)
        self._retire(old, fam, map_key, fid, fe.protocol, slots)  # 3. the old bank (and address, if it moved)
        self.live[fe.key] = _Live(fe.key, map_key, value, slots, fam)
        self._unblock(fe.key)
        return {"key": fe.key, "changed": True, "id": fid, "bank": bank, "selectable": count}

    def _write_meta(self, fid: int, fe: ServiceFrontend) -> None:
        md = ServiceMeta(kind=int(_KINDS[fe.kind]))
        ctypes.memmove(md.key, fe.key.encode(), len(fe.key.encode()))
        self.m.update("service_meta", fid.to_bytes(4, "little"), md)

    def _retire(self, old: _Live | None, fam: _Family, map_key: bytes, fid: int, protocol: str,
                slots: list[bytes]) -> None:
        """Remove what the frontend's previous entry used once the new one is in place."""
        if old is None:
            return
        if old.map_key != map_key or old.family is not fam:
            self.m.delete(old.family.services, old.map_key)
        self._drop_bank(old)
        if protocol != "TCP":
            new = slots if fam is old.family else []
            gone = self._targets(old.family, old.slots) - self._targets(old.family, new)
            if gone:
                self._forget_flows(old.family, fid, gone)

    def _fail_closed(self, fe: ServiceFrontend, fam: _Family, map_key: bytes, fid: int, flags: SvcFlag,
                     old: _Live | None, e: OSError) -> None:
        """The frontend's bank did not fit: give it an entry without backends that the programs
        refuse (SERVICE_MAP_FULL), or, when even that has no room, count it so that its address
        is refused all the same; never leave it on its old backends. Raises ServiceMapsFull."""
        value = ServiceValue(id=fid, bank=0, count=0, total=0, flags=int(flags | SvcFlag.UNPROGRAMMED),
                             affinity_timeout=fe.affinity_timeout)
        try:
            self._write_meta(fid, fe)
            self.m.update(fam.services, map_key, value)
            entry = True
        except OSError as e2:
            if e2.errno not in _FULL_ERRNOS:
                raise
            entry = False
        if not entry:  # no entry rather than one on the old backends
            self.m.delete("service_meta", fid.to_bytes(4, "little"))
        self._retire(old, fam, map_key if entry else b"", fid, fe.protocol, [])
        if entry:
            self.live[fe.key] = _Live(fe.key, map_key, value, [], fam)
            self.unprogrammed.discard(fe.key)
        else:
            self.live.pop(fe.key, None)
            self.unprogrammed.add(fe.key)
        self.blocked[fe.key] = fe
        self._count_unprogrammed()
        self.full_events += 1
        what = "backends" if entry else "services"
        self.last_full = {"frontend": fe.key, "reason": f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e}"}
        msg = (f"service maps full: frontend {fe.key} ({fe.ip}:{fe.port}/{fe.protocol}, {len(fe.backends)} "
               f"backends) did not fit ({what}: {errno.errorcode.get(e.errno or 0, e.errno)}); its connections "
               f"are refused (SERVICE_MAP_FULL) until it fits, retried every few seconds")
        log.error("%s", msg)
        raise ServiceMapsFull(msg)

    def _count_unprogrammed(self) -> None:
        """CONFIG SERVICES_UNPROGRAMMED: the IPv4 frontends without an entry (while non-zero the
        programs refuse every IPv4 serviceCIDR address without one; CONFIG has no IPv6 range)."""
        n = sum(1 for k in self.unprogrammed if k in self.blocked and family_of(self.blocked[k].ip) is V4)
        self.m.config_set(ConfigKey.SERVICES_UNPROGRAMMED, n)

    def _unblock(self, key: str) -> None:
        if key in self.blocked and key in self.unprogrammed:
            self.unprogrammed.discard(key)
            self._count_unprogrammed()
        self.blocked.pop(key, None)

    def retry(self) -> dict[str, int] | None:
        """Program the frontends that found the maps full (they fail closed meanwhile)."""
        if not self.blocked:
            return None
        done = 0
        for fe in list(self.blocked.values()):
            try:
                self.upsert(fe)
                done += 1
            except ServiceMapsFull:
                continue
        return {"programmed": done, "blocked": len(self.blocked)}

    def _drop_bank(self, lv: _Live) -> None:
        fam = lv.family
        for i, raw in enumerate(lv.slots):
            self.m.delete(fam.backends, BackendKey(bank=lv.value.bank, slot=i))
            b = fam.backend.from_buffer_copy(raw)
            self.m.delete(fam.members, fam.member(bank=lv.value.bank, ip=b.ip, port=b.port))

    @staticmethod
    def _targets(fam: _Family, slots: list[bytes]) -> set[tuple[int | bytes, int]]:
        return {(fam.ident(b.ip), b.port) for b in map(fam.backend.from_buffer_copy, slots)}

    def _forget_flows(self, fam: _Family, fid: int, gone: set[tuple[int | bytes, int]]) -> int:
        """UDP/SCTP translations to backends that no longer exist would keep a client's datagrams
        going to them (kube-proxy flushes the same conntrack entries); TCP flows die by RST."""
        n = 0
        for k, raw in list(self.m.items(fam.revnat)):
            v = fam.nat.from_buffer_copy(raw)
            if v.svc_id != fid:
                continue
            fk = fam.flow.from_buffer_copy(k)
            target = (fam.ident(v.daddr), v.dport) if v.flags & NatFlag.FORWARD else (fam.ident(fk.src_ip),
                                                                                     fk.src_port)
            if target in gone:
                self.m.delete(fam.revnat, k)
                n += 1
        return n

    def delete(self, key: str) -> bool:
        self._unblock(key)
        lv = self.live.pop(key, None)
        if lv is None:
            return False
        self.m.delete(lv.family.services, lv.map_key)
        self._drop_bank(lv)
        self.m.delete("service_meta", lv.value.id.to_bytes(4, "little"))
        if lv.family.key.from_buffer_copy(lv.map_key).protocol != IP_PROTOCOLS["TCP"]:
            # as for a removed backend: the same address and port given again (the Service
            # recreated, another one allocated the freed ClusterIP) must not reuse them
            self._forget_flows(lv.family, lv.value.id, self._targets(lv.family, lv.slots))
        return True

    # ------------------------------------------------------------------ reads (the live maps)
    def list(self) -> list[dict[str, Any]]:
        out = []
        for fam, k, v in ((f, k, v) for f in FAMILIES for k, v in self.m.items(f.services)):
            sk, sv = fam.key.from_buffer_copy(k), ServiceValue.from_buffer_copy(v)
            raw = self.m.lookup("service_meta", sv.id.to_bytes(4, "little"))
            md = ServiceMeta.from_buffer_copy(raw) if raw else ServiceMeta()
            key = bytes(md.key).rstrip(b"\0").decode(errors="replace")
            ns, name, port_name = parse_key(key)
            backends = []
            for i in range(sv.total):
                braw = self.m.lookup(fam.backends, BackendKey(bank=sv.bank, slot=i))
                if braw is None:
                    continue
                b = fam.backend.from_buffer_copy(braw)
                f = BackendFlag(b.flags)
                backends.append({"ip": fam.text(b.ip), "port": b.port, "node_name": "",
                                 "local": BackendFlag.LOCAL in f, "ready": BackendFlag.READY in f,
                                 "serving": BackendFlag.SERVING in f, "terminating": BackendFlag.TERMINATING in f,
                                 "protocol": protocol_name(sk.protocol), "selectable": i < sv.count})
            flags = SvcFlag(sv.flags)
            out.append({"key": key, "namespace": ns, "name": name, "port_name": port_name,
                        "protocol": protocol_name(sk.protocol), "ip": fam.text(sk.ip), "port": sk.port,
                        "family": f"IPv{fam.version}",
                        "kind": _KIND_NAMES.get(FrontendKind(md.kind), str(md.kind)) if raw else "?",
                        "backends": backends,
                        "affinity_timeout": sv.affinity_timeout if SvcFlag.AFFINITY in flags else 0,
                        "external_local": SvcFlag.EXTERNAL_LOCAL in flags,
                        "failed_closed": SvcFlag.UNPROGRAMMED in flags,
                        "id": sv.id, "bank": sv.bank, "selectable": sv.count})
        return sorted(out, key=lambda d: (d["key"], d["ip"], d["port"]))

    def maps_status(self) -> dict[str, Any]:
        return {"failedClosed": sorted(self.blocked), "withoutEntry": sorted(self.unprogrammed),
                "fullEvents": self.full_events, "lastFull": self.last_full}

    def counts(self) -> dict[str, int]:
        return {"frontends": self.m.count("services"), "backend_slots": self.m.count("backends"),
                "translations": self.m.count("revnat"), "socket_translations": self.m.count("sock_revnat"),
                "affinity": self.m.count("affinity"), "kp_backends": self.m.count("kp_backends"),
                "kp_backends6": self.m.count("kp_backends6"),
                "frontends6": self.m.count("services6"), "backend_slots6": self.m.count("backends6"),
                "translations6": self.m.count("revnat6"),
                "socket_translations6": self.m.count("sock_revnat6"), "affinity6": self.m.count("affinity6")}

    def stats(self) -> dict[str, int]:
        from novanet_core.bpf import syscall

        fd = self.m.fds["svcstats"]
        return {s.name.lower(): syscall.percpu_sum_u64(fd, int(s).to_bytes(4, "little")) for s in SvcStat}

    # ------------------------------------------------------------------ kube-proxy compatibility
    def set_kp_backends(self, backends: list[ServiceBackend]) -> dict[str, int]:
        """Each family's backends into its map (``kp_backends``, ``kp_backends6``), the entry count
        into its config slot (0 lets the programs skip the lookup)."""
        out = {"added": 0, "removed": 0, "total": 0}
        for version, name, cfg in ((4, "kp_backends", ConfigKey.KP_BACKENDS),
                                   (6, "kp_backends6", ConfigKey.KP_BACKENDS6)):
            want = {self._kp_key(version, b) for b in backends if ipaddress.ip_address(b.ip).version == version}
            have = set(self.m.keys(name))
            for k in want - have:
                self.m.update(name, k, KpBackendValue(flags=0))
            for k in have - want:
                self.m.delete(name, k)
            self.m.config_set(cfg, len(want))
            for field, n in (("added", len(want - have)), ("removed", len(have - want)), ("total", len(want))):
                out[field] += n
        return out

    @staticmethod
    def _kp_key(version: int, b: ServiceBackend) -> bytes:
        proto = IP_PROTOCOLS[b.protocol]
        if version == 4:
            return bytes(KpBackendKey(ip=_num(b.ip), port=b.port, protocol=proto))
        return bytes(KpBackend6Key(ip=V6.addr(b.ip), port=b.port, protocol=proto))


def ensure_sctp_crc(m: MapHandles) -> bool:
    """Fill ``sctp_crc`` (x^(32+8n) mod P) unless it already holds the table; True if written."""
    powers = sctp_crc_powers()
    last = len(powers) - 1
    raw = m.lookup("sctp_crc", last.to_bytes(4, "little"))
    if raw is not None and int.from_bytes(raw, "little") == powers[last]:
        return False
    for i, v in enumerate(powers):
        m.update("sctp_crc", i.to_bytes(4, "little"), v.to_bytes(4, "little"))
    return True
