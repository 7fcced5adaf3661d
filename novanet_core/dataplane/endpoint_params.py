"""Checks of the dataplane API's endpoint, remote and settings params before a backend sees them.

The agent is the only intended caller, but the socket is the trust boundary: a malformed request
is answered ``invalid_params`` naming the field, instead of reaching a backend that would fail
half-way through programming it (or raise something the caller can only read as ``internal``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from novanet_core import ipfamily
from novanet_core.api.protocol import ApiError
from novanet_core.types import Endpoint, RemoteEndpoint

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME_MAX = 15


def _fail(path: str, msg: str) -> ApiError:
    return ApiError("invalid_params", f"{path}: {msg}")


def _str(d: dict[str, Any], key: str, path: str, required: bool = True) -> str:
    v = d.get(key, None if required else "")
    if not isinstance(v, str) or (required and not v):
        raise _fail(f"{path}.{key}", "must be a non-empty string" if required else "must be a string")
    return v


def _int(d: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None = None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(f"{path}.{key}", f"{v!r} is not an integer in {lo}..{hi}")
    return v


def _ip(d: dict[str, Any], key: str, path: str, required: bool = True) -> str:
    v = _str(d, key, path, required)
    if not v and not required:
        return v
    if ipfamily.ipv4_packed(v) is not None:  # the common case, without ip_address()'s cost
        return v
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise _fail(f"{path}.{key}", f"{v[:60]!r} is not an IP address") from None
    return v


def _family_list(d: dict[str, Any], key: str, path: str, parse: Any, first: str | None) -> list[str]:
    """A list of one entry per family (``parse``: ipfamily.parse_ips or parse_cidrs); its first
    entry must be ``first`` (the single key's value) when that is given."""
    v = d.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _fail(f"{path}.{key}", "must be a non-empty list of strings")
    try:
        parse(v)
    except ValueError as e:
        raise _fail(f"{path}.{key}", str(e)) from None
    if first is not None and v[0] != first:
        raise _fail(f"{path}.{key}", f"{v[0][:60]!r} must be the primary family's value {first[:60]!r} first")
    return v


def _labels(d: dict[str, Any], path: str) -> dict[str, str]:
    v = d.get("labels", {})
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise _fail(f"{path}.labels", "must be a map of string to string")
    return v


def parse_endpoint(d: Any, path: str = "endpoint") -> Endpoint:
    if not isinstance(d, dict):
        raise _fail(path, "must be an object")
    unknown = set(d) - set(Endpoint.__dataclass_fields__)
    if unknown:
        raise _fail(f"{path}.{sorted(unknown)[0]}", "unknown field")
    for key in ("container_id", "ifname", "namespace", "pod", "netns"):
        _str(d, key, path)
    _ip(d, "ip", path)
    _ip(d, "gateway", path)
    _ip(d, "node_ip", path, required=False)
    if "ips" in d:
        ips = _family_list(d, "ips", path, ipfamily.parse_ips, d["ip"])
        gws = _family_list(d, "gateways", path, ipfamily.parse_ips, d["gateway"]) if "gateways" in d else [d["gateway"]]
        if len(gws) != len(ips) or any(ipfamily.family_of(a) != ipfamily.family_of(g) for a, g in zip(ips, gws, strict=False)):
            raise _fail(f"{path}.gateways", "must hold one gateway per address of ips, in the same order")
    for key in ("mac", "host_mac"):
        if not _MAC.match(_str(d, key, path)):
            raise _fail(f"{path}.{key}", f"{d[key][:40]!r} is not a MAC address")
    if len(_str(d, "host_ifname", path)) > _IFNAME_MAX:
        raise _fail(f"{path}.host_ifname", f"longer than {_IFNAME_MAX} characters")
    _int(d, "host_ifindex", path, 0, 2**31 - 1)  # 0: the backend resolves host_ifname
    _int(d, "mtu", path, 576, 9000)
    _int(d, "identity", path, 0, 2**32 - 1, default=0)
    _labels(d, path)
    return Endpoint.from_dict(d)


def parse_remote(d: Any, path: str = "remote") -> RemoteEndpoint:
    if not isinstance(d, dict):
        raise _fail(path, "must be an object")
    unknown = set(d) - set(RemoteEndpoint.__dataclass_fields__)
    if unknown:
        raise _fail(f"{path}.{sorted(unknown)[0]}", "unknown field")
    _ip(d, "ip", path)
    _ip(d, "node_ip", path)  # where the pod lives: without it the datapath cannot deliver
    _int(d, "identity", path, 0, 2**32 - 1)
    for key in ("namespace", "pod"):
        _str(d, key, path, required=False)
    return RemoteEndpoint(**d)


# dp.configure keys the core sends (Agent.datapath_settings) and their types; plugins may read more.
# The single keys are the primary family's; the list keys carry one entry per family.
_SETTINGS: dict[str, tuple[type, ...]] = {
    "nodeIP": (str,), "nodeName": (str,), "podCIDR": (str,), "clusterCIDR": (str,), "gateway": (str,),
    "routingMode": (str,), "tunnelProtocol": (str,), "defaultDeny": (bool,), "masquerade": (bool,), "mtu": (int,),
    "nodeIPs": (list,), "podCIDRs": (list,), "clusterCIDRs": (list,), "gateways": (list,),
}
_SETTINGS_LISTS = {"nodeIPs": ("nodeIP", ipfamily.parse_ips), "podCIDRs": ("podCIDR", ipfamily.parse_cidrs),
                   "clusterCIDRs": ("clusterCIDR", ipfamily.parse_cidrs), "gateways": ("gateway", ipfamily.parse_ips)}


def check_settings(s: Any) -> dict[str, Any]:
    if not isinstance(s, dict):
        raise _fail("settings", "must be an object")
    for key, types in _SETTINGS.items():
        if key in s and (not isinstance(s[key], types) or (int in types and isinstance(s[key], bool))):
            raise _fail(f"settings.{key}", f"must be {' or '.join(t.__name__ for t in types)}")
    for key in ("nodeIP", "gateway"):
        if key in s:
            _ip(s, key, "settings")
    for key in ("podCIDR", "clusterCIDR"):
        if key in s:
            try:
                ipaddress.ip_network(s[key], strict=True)
            except ValueError:
                raise _fail(f"settings.{key}", f"{s[key][:60]!r} is not a CIDR") from None
    for key, (single, parse) in _SETTINGS_LISTS.items():
        if key in s:
            _family_list(s, key, "settings", parse, s.get(single))
    if s.get("routingMode", "overlay") not in ("overlay", "native"):
        raise _fail("settings.routingMode", "must be overlay or native")
    if "mtu" in s and not 576 <= s["mtu"] <= 9000:
        raise _fail("settings.mtu", "must be 576..9000")
    return s
