"""Flow filters (``novanetctl flows --from-pod ... --verdict DENY``), modelled on Hubble's FlowFilter.

Every set field must match (AND); fields that name a side (``from_*``/``to_*``) match that side,
the others either side. A filter arrives as the JSON object ``filter`` of ``ebpf.flows`` and is
compiled once, either into a predicate over one raw event tuple (:meth:`FlowFilter.compile`) or
into a selection over a whole batch of them (:meth:`FlowFilter.compile_batch`, what followers
use: no Python call per event); pod names are looked up only when a pod filter asks for them.

Labels are not known here (the dataplane knows which pod has which address, not every pod's
labels): the CLI resolves ``--label`` into identities through the agent and sends those.
"""

from __future__ import annotations

import ipaddress
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from novanet_core import ipfamily
from novanet_core.protocols import IP_PROTOCOLS, protocol_name

# Positions in the tuples decoded with flows.EVENT_POLICY.
(F_FAMILY, F_VERDICT, F_REASON, F_TCP_FLAGS, F_SRC_ID, F_DST_ID, F_PROTO, F_HOOK, F_SPORT, F_DPORT,
 F_POLICY_DIR, F_SRC_IP, F_DST_IP, F_POLICY_SET, F_BYTES, F_PACKETS, F_TS) = range(17)

# raw 16-byte event address (IPv4 in the first 4 bytes, or IPv6) -> "namespace/pod"
Names = dict[bytes, str]

TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20, "ECE": 0x40,
             "CWR": 0x80}
VERDICTS = {"ALLOW": 1, "FORWARDED": 1, "DENY": 2, "DROPPED": 2}

Pred = Callable[[tuple[Any, ...]], bool]
Event = tuple[Any, ...]
Select = Callable[[list[Event]], list[Event]]
# one pass of a batch filter: the batch -> a truth value per event, computed without a Python call
# per event (map over itemgetter / set.__contains__ / int.__le__ / dict.__getitem__ run in C)
Mask = Callable[[list[Event]], Iterator[Any]]
Fixed = dict[int, "frozenset[Any] | Callable[[], frozenset[Any]]"]  # event field position -> allowed values

PRODUCT_LIMIT = 4096  # allowed-key combinations merged into one set lookup; past this, one pass per field


class FilterError(ValueError):
    """A bad filter field; the message starts with the field's path."""


def tcp_flag_names(flags: int) -> list[str]:
    return [n for n, bit in TCP_FLAGS.items() if flags & bit]


def raw_ip(ip: str) -> bytes:
    """An address as the event carries it (the key of :data:`Names`)."""
    if ":" in ip:
        return ipaddress.IPv6Address(ip).packed
    packed = ipfamily.ipv4_packed(ip)  # once per remote pod of a full sync: not ipaddress
    if packed is None:
        raise ValueError(f"{ip!r} is not an IPv4 address")
    return packed + bytes(12)


@dataclass(frozen=True)
class FlowFilter:
    identity: int = 0  # either side (the guide's --identity)
    drops_only: bool = False
    pod: str | None = None  # "namespace/name", either side
    from_pod: str | None = None
    to_pod: str | None = None
    namespace: str | None = None  # either side
    from_namespace: str | None = None
    to_namespace: str | None = None
    identities: frozenset[int] | None = None  # either side (labels resolved by the caller)
    from_identities: frozenset[int] | None = None
    to_identities: frozenset[int] | None = None
    ip: str | None = None  # address or CIDR, either side
    from_ip: str | None = None
    to_ip: str | None = None
    port: int | None = None  # source or destination port
    protocol: int | None = None
    verdict: int | None = None  # 1 = ALLOW/FORWARDED, 2 = DENY/DROPPED
    reasons: frozenset[int] | None = None  # drop reason codes
    tcp_flags: int | None = None  # any of these flags
    since: float | None = None  # wall-clock seconds

    def merged(self, **kw: Any) -> FlowFilter:
        return replace(self, **{k: v for k, v in kw.items() if v})

    def is_empty(self) -> bool:
        return self == FlowFilter()

    # ------------------------------------------------------------------ parsing (API params)
    @classmethod
    def from_params(cls, raw: Any, path: str = "filter") -> FlowFilter:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise FilterError(f"{path}: must be an object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FilterError(f"{path}.{unknown[0]}: unknown filter field (known: {', '.join(sorted(known))})")
        kw: dict[str, Any] = {}
        for key, v in raw.items():
            if v is None:
                continue
            p = f"{path}.{key}"
            if key in ("identity", "port"):
                kw[key] = _int(v, p, 0xFFFFFFFF if key == "identity" else 65535)
            elif key == "drops_only":
                if not isinstance(v, bool):
                    raise FilterError(f"{p}: {v!r} is not a boolean")
                kw[key] = v
            elif key in ("pod", "from_pod", "to_pod"):
                kw[key] = _pod(v, p)
            elif key in ("namespace", "from_namespace", "to_namespace"):
                if not isinstance(v, str) or not v or "/" in v:
                    raise FilterError(f"{p}: {v!r} is not a namespace name")
                kw[key] = v
            elif key in ("identities", "from_identities", "to_identities"):
                if not isinstance(v, list):
                    raise FilterError(f"{p}: must be a list of identities")
                kw[key] = frozenset(_int(x, f"{p}[{i}]", 0xFFFFFFFF) for i, x in enumerate(v))
            elif key in ("ip", "from_ip", "to_ip"):
                try:
                    kw[key] = str(ipaddress.IPv4Network(str(v), strict=False))
                except ValueError:
                    raise FilterError(f"{p}: {v!r} is not an IPv4 address or CIDR") from None
            elif key == "protocol":
                kw[key] = _named(v, p, IP_PROTOCOLS, 255)
            elif key == "verdict":
                if not isinstance(v, str) or v.upper() not in VERDICTS:
                    raise FilterError(f"{p}: {v!r} is not one of {', '.join(VERDICTS)}")
                kw[key] = VERDICTS[v.upper()]
            elif key == "reasons":
                kw[key] = frozenset(_reason(x, f"{p}[{i}]") for i, x in enumerate(_list(v, p)))
            elif key == "tcp_flags":
                bits = 0
                for i, x in enumerate(_list(v, p)):
                    if not isinstance(x, str) or x.upper() not in TCP_FLAGS:
                        raise FilterError(f"{p}[{i}]: {x!r} is not one of {', '.join(TCP_FLAGS)}")
                    bits |= TCP_FLAGS[x.upper()]
                kw[key] = bits
            elif key == "since":
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise FilterError(f"{p}: {v!r} is not a time in seconds since the epoch")
                kw[key] = float(v)
        return cls(**kw)

    def to_params(self) -> dict[str, Any]:
        """The JSON form :meth:`from_params` reads (for clients)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v in (None, 0, False):
                continue
            if isinstance(v, frozenset):
                v = sorted(v)
                if f.name == "reasons":
                    from novanet_ebpf_policy.layouts import DropReason

                    v = [DropReason(x).name for x in v]
            elif f.name == "protocol":
                v = protocol_name(v)
            elif f.name == "verdict":
                v = "ALLOW" if v == 1 else "DENY"
            elif f.name == "tcp_flags":
                v = tcp_flag_names(v)
            out[f.name] = v
        return out

    # ------------------------------------------------------------------ compiling
    def compile(self, names: Names, wall_offset: float) -> Pred:
        """A predicate over raw event tuples; ``names`` is read at match time (pods come and go)."""
        checks: list[Pred] = []
        if self.drops_only:
            checks.append(lambda t: t[F_VERDICT] == 2)
        if self.verdict is not None:
            v = self.verdict
            checks.append(lambda t: t[F_VERDICT] == v)
        if self.protocol is not None:
            pr = self.protocol
            checks.append(lambda t: t[F_PROTO] == pr)
        if self.port is not None:
            port = self.port
            checks.append(lambda t: t[F_DPORT] == port or t[F_SPORT] == port)
        if self.reasons is not None:
            rs = self.reasons
            checks.append(lambda t: t[F_REASON] in rs)
        if self.tcp_flags is not None:
            fl = self.tcp_flags
            checks.append(lambda t: t[F_PROTO] == 6 and bool(t[F_TCP_FLAGS] & fl))
        if self.identity:
            i = self.identity
            checks.append(lambda t: t[F_SRC_ID] == i or t[F_DST_ID] == i)
        checks += _side_checks(self.identities, self.from_identities, self.to_identities,
                               lambda ids: lambda x: x in ids, F_SRC_ID, F_DST_ID)
        checks += _side_checks(self.ip, self.from_ip, self.to_ip, _cidr_test, F_SRC_IP, F_DST_IP)
        checks += _side_checks(self.pod, self.from_pod, self.to_pod,
                               lambda pod: lambda raw: names.get(raw) == pod, F_SRC_IP, F_DST_IP)
        checks += _side_checks(self.namespace, self.from_namespace, self.to_namespace,
                               lambda ns: lambda raw: names.get(raw, "").partition("/")[0] == ns,
                               F_SRC_IP, F_DST_IP)
        if self.since is not None:
            since_ns = int((self.since - wall_offset) * 1e9)
            checks.append(lambda t: t[F_TS] >= since_ns)
        if not checks:
            return lambda t: True
        if len(checks) == 1:
            return checks[0]
        return lambda t: all(c(t) for c in checks)


    def compile_batch(self, names: Names, wall_offset: float) -> Select:
        """The same filter as :meth:`compile`, over a whole batch: ``select(batch)`` is
        ``[t for t in batch if pred(t)]``, but evaluated in C a pass per condition (a pass runs over
        the events the previous passes kept), and the single-field conditions (verdict, protocol,
        reasons, identities, pods, namespaces of one side) merged into one lookup of the tuple of
        those fields in the set of allowed combinations. Pod and namespace conditions turn into the
        set of addresses they match, recomputed per batch from ``names`` (pods come and go)."""
        fixed: Fixed = {}  # position -> allowed values
        masks = self._value_conditions(fixed, wall_offset) + self._address_conditions(fixed, names)
        if fixed:
            masks.insert(0, _fixed_mask(fixed))
        if not masks:
            return list
        if len(masks) == 1:
            only = masks[0]
            return lambda b: list(itertools.compress(b, only(b)))

        def select(batch: list[Event]) -> list[Event]:
            for m in masks:
                if not batch:
                    break
                batch = list(itertools.compress(batch, m(batch)))
            return batch

        return select

    def _value_conditions(self, fixed: Fixed, wall_offset: float) -> list[Mask]:
        """Conditions on the event's own fields: single-field ones into ``fixed``, the others
        (either side, time) as masks."""
        masks: list[Mask] = []
        if self.drops_only:
            _allow(fixed, F_VERDICT, frozenset({2}))
        if self.verdict is not None:
            _allow(fixed, F_VERDICT, frozenset({self.verdict}))
        if self.protocol is not None:
            _allow(fixed, F_PROTO, frozenset({self.protocol}))
        if self.reasons is not None:
            _allow(fixed, F_REASON, self.reasons)
        if self.tcp_flags is not None:
            _allow(fixed, F_PROTO, frozenset({6}))
            _allow(fixed, F_TCP_FLAGS, frozenset(x for x in range(256) if x & self.tcp_flags))
        if self.port is not None:
            masks.append(_either({self.port}, F_SPORT, F_DPORT))
        if self.identity:
            masks.append(_either({self.identity}, F_SRC_ID, F_DST_ID))
        if self.identities is not None:
            masks.append(_either(self.identities, F_SRC_ID, F_DST_ID))
        if self.from_identities is not None:
            _allow(fixed, F_SRC_ID, self.from_identities)
        if self.to_identities is not None:
            _allow(fixed, F_DST_ID, self.to_identities)
        if self.since is not None:
            since_ns = int((self.since - wall_offset) * 1e9)
            get_ts = operator.itemgetter(F_TS)
            masks.append(lambda b: map(since_ns.__le__, map(get_ts, b)))  # since_ns <= ts
        return masks

    def _address_conditions(self, fixed: Fixed, names: Names) -> list[Mask]:
        """Pod, namespace and CIDR conditions: one side into ``fixed``, either side as masks."""
        masks: list[Mask] = []

        def pod_ips(pod: str) -> Callable[[], frozenset[bytes]]:
            return lambda: frozenset(raw for raw, n in list(names.items()) if n == pod)

        def ns_ips(ns: str) -> Callable[[], frozenset[bytes]]:
            return lambda: frozenset(raw for raw, n in list(names.items()) if n.partition("/")[0] == ns)

        for either, src, dst, make in ((self.pod, self.from_pod, self.to_pod, pod_ips),
                                       (self.namespace, self.from_namespace, self.to_namespace, ns_ips)):
            if either is not None:
                masks.append(_either(make(either), F_SRC_IP, F_DST_IP))
            if src is not None:
                _allow(fixed, F_SRC_IP, make(src))
            if dst is not None:
                _allow(fixed, F_DST_IP, make(dst))
        for cidr, positions in ((self.ip, (F_SRC_IP, F_DST_IP)), (self.from_ip, (F_SRC_IP,)),
                                (self.to_ip, (F_DST_IP,))):
            if cidr is not None:
                masks.append(_cidr_mask(cidr, positions))
        return masks


def _allow(fixed: Fixed, pos: int, values: Any) -> None:
    """Narrow what ``pos`` may hold to ``values`` too."""
    prev = fixed.get(pos)
    if prev is None:
        fixed[pos] = values
    elif callable(prev) or callable(values):  # both dynamic or mixed: evaluate both per batch
        a, b = prev, values
        fixed[pos] = lambda: _now(a) & _now(b)
    else:
        fixed[pos] = prev & values


def _now(v: frozenset[Any] | Callable[[], frozenset[Any]]) -> frozenset[Any]:
    return v() if callable(v) else v


def _fixed_mask(fixed: dict[int, frozenset[Any] | Callable[[], frozenset[Any]]]) -> Mask:
    """One set lookup per event for all single-position conditions, while their product is small;
    the rest (large products) a lookup per position."""
    positions = sorted(fixed)

    def mask(batch: list[Event]) -> Iterator[Any]:
        allowed = {p: _now(fixed[p]) for p in positions}
        merged: list[int] = []
        size = 1
        for p in sorted(positions, key=lambda p: len(allowed[p])):
            if size * len(allowed[p]) <= PRODUCT_LIMIT:
                merged.append(p)
                size *= len(allowed[p])
        rest = [p for p in positions if p not in merged]
        if len(merged) == 1:
            out: Iterator[Any] = map(allowed[merged[0]].__contains__, map(operator.itemgetter(merged[0]), batch))
        else:
            combos = frozenset(itertools.product(*(allowed[p] for p in merged)))
            out = map(combos.__contains__, map(operator.itemgetter(*merged), batch))
        for p in rest:
            out = map(operator.and_, out, map(allowed[p].__contains__, map(operator.itemgetter(p), batch)))
        return out

    return mask


def _either(values: Any, fs: int, fd: int) -> Mask:
    """Source or destination in ``values`` (a set, or a function giving the set per batch)."""
    gs, gd = operator.itemgetter(fs), operator.itemgetter(fd)

    def mask(batch: list[Event]) -> Iterator[Any]:
        v = _now(values) if callable(values) else values
        return map(operator.or_, map(v.__contains__, map(gs, batch)), map(v.__contains__, map(gd, batch)))

    return mask


class _Memo(dict[bytes, bool]):
    """address -> in the CIDR, computed once per address (a hit is a C-level dict lookup)."""

    LIMIT = 65536

    def __init__(self, test: Callable[[bytes], bool]):
        super().__init__()
        self.test = test

    def __missing__(self, raw: bytes) -> bool:
        if len(self) >= self.LIMIT:
            self.clear()
        v = self[raw] = self.test(raw)
        return v


def _cidr_mask(cidr: str, positions: tuple[int, ...]) -> Mask:
    memo = _Memo(_cidr_test(cidr))
    getters = [operator.itemgetter(p) for p in positions]
    if len(getters) == 1:
        g = getters[0]
        return lambda b: map(memo.__getitem__, map(g, b))
    gs, gd = getters
    return lambda b: map(operator.or_, map(memo.__getitem__, map(gs, b)), map(memo.__getitem__, map(gd, b)))


def _side_checks(either: Any, src: Any, dst: Any, make: Callable[[Any], Callable[[Any], bool]], fs: int,
                 fd: int) -> list[Pred]:
    out: list[Pred] = []
    if either is not None:
        m = make(either)
        out.append(lambda t: m(t[fs]) or m(t[fd]))
    if src is not None:
        ms = make(src)
        out.append(lambda t: ms(t[fs]))
    if dst is not None:
        md = make(dst)
        out.append(lambda t: md(t[fd]))
    return out


def _cidr_test(cidr: str) -> Callable[[bytes], bool]:
    net = ipaddress.IPv4Network(cidr)
    base, mask = int(net.network_address), int(net.netmask)
    return lambda raw: (int.from_bytes(raw[:4], "big") & mask) == base


def _int(v: Any, path: str, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise FilterError(f"{path}: {v!r} is not an integer in 0..{hi}")
    return v


def _list(v: Any, path: str) -> Iterable[Any]:
    if not isinstance(v, list):
        raise FilterError(f"{path}: must be a list")
    return v


def _pod(v: Any, path: str) -> str:
    if not isinstance(v, str) or v.count("/") != 1 or not all(v.split("/")):
        raise FilterError(f"{path}: {v!r} is not NAMESPACE/POD")
    return v


def _named(v: Any, path: str, table: dict[str, int], hi: int) -> int:
    if isinstance(v, str):
        if v.upper() in table:
            return table[v.upper()]
        raise FilterError(f"{path}: {v!r} is not one of {', '.join(table)}")
    return _int(v, path, hi)


def _reason(v: Any, path: str) -> int:
    from novanet_ebpf_policy.layouts import DropReason

    if isinstance(v, str) and v.upper() in DropReason.__members__:
        return int(DropReason[v.upper()])
    if isinstance(v, int) and not isinstance(v, bool) and v in {int(r) for r in DropReason}:
        return v
    raise FilterError(f"{path}: {v!r} is not a drop reason ({', '.join(r.name for r in DropReason if r)})")
