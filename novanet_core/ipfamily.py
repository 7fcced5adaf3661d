"""IP families: the single- and dual-stack address and CIDR lists every layer parses the same way.

Kubernetes writes a dual-stack value either as one comma-separated string
(``--cluster-cidr=10.42.0.0/16,fd00:42::/48``, kubelet ``--node-ip=a,b``) or as a list
(``spec.podCIDRs``, ``status.podIPs``); both mean at most one entry per family, and the first
entry is the *primary* family (``podCIDR`` = ``podCIDRs[0]``, ``podIP`` = ``podIPs[0]``). The
parsers here accept either form and raise ``ValueError`` with a message the caller prefixes
with its field path.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
FAMILIES = (4, 6)
_T = TypeVar("_T", Network, Address)


def family_name(version: int) -> str:
    return f"IPv{version}"


def ipv4_packed(value: Any) -> bytes | None:
    """The four bytes of an IPv4 address string, None for anything else.

    It takes the strings ``ipaddress.IPv4Address`` takes (dotted quad, no leading zeros, no
    blanks; glibc's parser refuses what it refuses) in a twentieth of its time on this loaded
    machine: the start-up paths parse an address or two per remote pod, 30,000 of them."""
    if not isinstance(value, str):
        return None
    try:
        return socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None


def family_of(value: str) -> int:
    """4 or 6 for an address or CIDR string (no validation beyond telling the two apart)."""
    return 6 if ":" in str(value) else 4


def _items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",")]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"{value!r} must be a string (comma-separated for dual-stack) or a list")


def _one_per_family(items: list[_T], what: str) -> list[_T]:
    if not items:
        raise ValueError(f"needs at least one {what}")
    if len(items) > 2:
        raise ValueError(f"{len(items)} {what}s given: at most one IPv4 and one IPv6")
    if len(items) == 2 and items[0].version == items[1].version:
        raise ValueError(f"{items[0]} and {items[1]} are both {family_name(items[0].version)}: "
                         "a dual-stack value has one IPv4 and one IPv6 entry")
    return items


def parse_cidrs(value: Any, strict: bool = True) -> list[Network]:
    """One CIDR, or one per family (``"a,b"`` or ``[a, b]``), primary first."""
    out = []
    for raw in _items(value):
        if not isinstance(raw, str):
            raise ValueError(f"{raw!r} is not a CIDR string")
        try:
            out.append(ipaddress.ip_network(raw, strict=strict))
        except ValueError as e:
            raise ValueError(f"{raw!r} is not a CIDR ({e})") from None
    return _one_per_family(out, "CIDR")


def parse_ips(value: Any) -> list[Address]:
    """One address, or one per family, primary first."""
    out = []
    for raw in _items(value):
        if not isinstance(raw, str):
            raise ValueError(f"{raw!r} is not an IP address string")
        try:
            out.append(ipaddress.ip_address(raw))
        except ValueError:
            raise ValueError(f"{raw!r} is not an IP address") from None
    return _one_per_family(out, "address")


def join(items: Iterable[Any]) -> str:
    """The canonical comma-separated form."""
    return ",".join(str(i) for i in items)


def split(value: str | None) -> list[str]:
    """A canonical comma-separated value back into its entries ("" / None: none)."""
    return [p for p in (value or "").split(",") if p]


def pick(values: Sequence[str], version: int) -> str | None:
    """The entry of ``values`` (addresses or CIDRs, as strings) of that family, if any."""
    return next((v for v in values if family_of(v) == version), None)


def families(values: Iterable[str]) -> list[int]:
    return [family_of(v) for v in values]


def check_inside(cidrs: Sequence[Network], outer: Sequence[Network], what: str, outer_what: str) -> None:
    """Each of ``cidrs`` inside the ``outer`` CIDR of its family; every family of ``outer`` covered."""
    by_family = {n.version: n for n in outer}
    for n in cidrs:
        o = by_family.get(n.version)
        if o is None:
            raise ValueError(f"{what} {n} is {family_name(n.version)} but {outer_what} "
                             f"({join(outer)}) has no {family_name(n.version)} range")
        if not n.subnet_of(o):  # type: ignore[arg-type]
            raise ValueError(f"{what} {n} is not inside {outer_what} {o}")
    missing = sorted(set(by_family) - {n.version for n in cidrs})
    if missing:
        raise ValueError(f"{what} ({join(cidrs)}) has no {family_name(missing[0])} range but {outer_what} "
                         f"has {by_family[missing[0]]}: a dual-stack cluster gives every node both")


def overlapping(a: Sequence[Network], b: Sequence[Network]) -> tuple[Network, Network] | None:
    """The first pair of same-family CIDRs of ``a`` and ``b`` that overlap."""
    for x in a:
        for y in b:
            if x.version == y.version and x.overlaps(y):  # type: ignore[arg-type]
                return x, y
    return None
