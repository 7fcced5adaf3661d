"""CNI result shapes of every spec version NovaNet answers, and the conversions between them.

The agent builds one result (the 1.1.0 shape) and converts it here to the version the runtime's
config asked for, so that every client (the C ``novanet-cni`` and the Python reference) just
prints what the agent returns. The conversions follow libcni's (``pkg/types/100`` and
``pkg/types/040`` of containernetworking/cni), including what they drop:

- 1.0.0 and 1.1.0 share one result type; only ``cniVersion`` differs.
- 1.x -> 0.3.0/0.3.1/0.4.0: each IP gains ``version`` ("4"/"6", from its address); interfaces
  keep only ``name``, ``mac``, ``sandbox``; routes and DNS are copied as they are.
- 0.x -> 1.x: the IP ``version`` goes; interfaces keep ``name``, ``mac``, ``sandbox``.
- Keys a version's types do not know are not carried over, and empty optional fields are left
  out the way Go's ``omitempty`` leaves them out. A 0.x result always carries ``dns`` (Go never
  omits an empty struct), a 1.x result only when it is not empty (types100 removes it).

Imported by the Python CNI client, so it imports nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SPEC_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
_V0 = frozenset(("0.3.0", "0.3.1", "0.4.0"))

# Field order as libcni marshals them (Go encodes struct fields in declaration order).
_IFACE_V1 = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_IFACE_V0 = ("name", "mac", "sandbox")
_ROUTE = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
_DNS = ("nameservers", "domain", "search", "options")
# Pointer fields in Go (*int): kept when set, even to 0. The others are dropped when zero/empty.
_KEEP_ZERO = frozenset(("table", "scope", "interface"))


class ConversionError(ValueError):
    pass


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def is_v0(version: str) -> bool:
    return version in _V0


def _pick(obj: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    out = {}
    for k in keys:
        v = obj.get(k)
        if v is None or (k not in _KEEP_ZERO and v in (0, "", [], {})):
            continue
        out[k] = v
    return out


def _ip_family(address: str) -> str:
    return "6" if ":" in address.split("/")[0] else "4"


def _ips(ips: Any, v0: bool) -> list[dict[str, Any]]:
    out = []
    for ip in ips if isinstance(ips, list) else []:
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise ConversionError(f"ips: entry {ip!r} has no string address")
        d: dict[str, Any] = {"version": _ip_family(ip["address"])} if v0 else {}
        if ip.get("interface") is not None:
            d["interface"] = ip["interface"]
        d["address"] = ip["address"]
        if ip.get("gateway"):
            d["gateway"] = ip["gateway"]
        out.append(d)
    return out


def convert(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """``result`` (any supported version; no ``cniVersion`` means 1.1.0) rendered at ``to_version``."""
    if to_version not in SUPPORTED_VERSIONS:
        raise ConversionError(f"cniVersion {to_version!r} is not supported")
    src = result.get("cniVersion") or SPEC_VERSION
    if src not in SUPPORTED_VERSIONS:
        raise ConversionError(f"result cniVersion {src!r} is not supported")
    v0 = is_v0(to_version)
    # Interfaces pass through a 0.x type (in either direction) with only name/mac/sandbox.
    iface_keys = _IFACE_V0 if v0 or is_v0(src) else _IFACE_V1
    out: dict[str, Any] = {"cniVersion": to_version}
    ifaces = [_pick(i, iface_keys) for i in result.get("interfaces") or [] if isinstance(i, dict)]
    if ifaces:
        out["interfaces"] = ifaces
    ips = _ips(result.get("ips"), v0)
    if ips:
        out["ips"] = ips
    routes = [_pick(r, _ROUTE) for r in result.get("routes") or [] if isinstance(r, dict)]
    if routes:
        out["routes"] = routes
    dns = _pick(result.get("dns"), _DNS)
    if dns or v0:
        out["dns"] = dns
    return out
