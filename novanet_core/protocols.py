"""Protocol numbers NovaNet uses, defined once: IP protocols and NovaNet's route protocols.

Every part of NovaNet that names an IP protocol (policy compiler, datapath keys, flow output,
CLI tables, lab probes) or marks the kernel routes it owns imports them from here.

IP protocol names follow Kubernetes, which spells them upper case (``TCP``, ``UDP``, ``SCTP``: the
``core/v1`` ``Protocol`` values NetworkPolicy, container and Service ports take). Numbers are the
IANA assignments, read from the C library through :mod:`socket` rather than typed again. Number 0
in a datapath key means "any protocol" and is shown as ``*``.

Route protocols: the routes NovaNet installs carry a protocol number of their own
(``rtm_protocol``), so each owner finds and removes exactly its routes and ``ip route`` shows
who put them there.
"""

from __future__ import annotations

import socket
from typing import Literal, get_args

# ---------------------------------------------------------------------- IP protocols

PROTO_ANY = 0
IP_PROTOCOLS: dict[str, int] = {
    "ICMP": socket.IPPROTO_ICMP,
    "TCP": socket.IPPROTO_TCP,
    "UDP": socket.IPPROTO_UDP,
    "SCTP": socket.IPPROTO_SCTP,
}
# The protocols a Kubernetes port (NetworkPolicy, container port, Service) may name; the type
# serves pydantic models, the tuple everything else.
L4Protocol = Literal["TCP", "UDP", "SCTP"]
L4_PROTOCOLS: tuple[str, ...] = get_args(L4Protocol)
_NAMES = {n: name for name, n in IP_PROTOCOLS.items()}
_ANY_SPELLINGS = ("ANY", "*")


def protocol_number(value: str | int, field: str = "protocol") -> int:
    """A protocol name (any case; ``any``/``*`` = 0) or number 0..255 as its number.

    Raises ``ValueError`` naming ``field`` for anything else.
    """
    if isinstance(value, str):
        v = value.strip().upper()
        if v in IP_PROTOCOLS:
            return IP_PROTOCOLS[v]
        if v in _ANY_SPELLINGS:
            return PROTO_ANY
        if v.isdigit():
            value = int(v)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    names = ", ".join(n.lower() for n in IP_PROTOCOLS)
    raise ValueError(f"{field}: {value!r} is not a protocol ({names}, any) or a number 0..255")


def protocol_name(number: int) -> str:
    """``6`` -> ``TCP``; ``0`` -> ``*`` (any); an unnamed number as itself."""
    if number == PROTO_ANY:
        return "*"
    return _NAMES.get(number, str(number))


# ---------------------------------------------------------------------- route protocols

# NovaNet's routes (``ip route ... proto novanet``): the datapaths' per-pod /32 routes and the
# tunnel backends' remote PodCIDR routes. Owners tell theirs apart by prefix length (/32 pods,
# shorter for PodCIDRs), so one number serves them all.
RTPROT_NOVANET = 99
RTPROT_NOVANET_NAME = "novanet"
# The routing backend's blackhole for the local PodCIDR (so the prefix is in the RIB to
# advertise): a number of its own, so it is never mistaken for a datapath or tunnel route.
RTPROT_NOVANET_ROUTING = 98
# zebra's number for the routes it learned over BGP (``proto bgp`` in ``ip route``).
RTPROT_BGP = 186
