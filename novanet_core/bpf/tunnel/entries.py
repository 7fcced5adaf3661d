"""The shared ``tunnels`` map (remote node key -> how to reach it), written by the active tunnel
plugin and read by the datapath before its tail call and by the tunnel programs."""

from __future__ import annotations

import ctypes
import ipaddress
import os
from collections.abc import Mapping

from novanet_core.bpf import layouts_c, syscall
from novanet_core.bpf.layouts import TunnelFlag, TunnelKey, TunnelValue, node_key, u8


def ip_num(ip: str) -> int:
    """An IPv4 address as the maps hold it (host-order u32)."""
    return int(ipaddress.IPv4Address(ip))


def tunnel_value(ifindex: int, node_ip: str, vni: int) -> TunnelValue:
    """The entry of a node reached at underlay address ``node_ip`` (either family)."""
    addr = ipaddress.ip_address(node_ip)
    if addr.version == 4:
        return TunnelValue(ifindex=ifindex, remote_ip=int(addr), vni=vni)
    return TunnelValue(
        ifindex=ifindex, vni=vni, flags=TunnelFlag.IPV6, remote_ip6=(u8 * 16).from_buffer_copy(addr.packed)
    )


def entry_ip(v: TunnelValue) -> str:
    """The underlay address an entry sends to."""
    if v.flags & TunnelFlag.IPV6:
        return str(ipaddress.IPv6Address(bytes(v.remote_ip6)))
    return str(ipaddress.IPv4Address(v.remote_ip))


def key_collisions(node_ips: list[str]) -> dict[str, str]:
    """Node IPs whose node key an earlier one of ``node_ips`` already has (later IP -> earlier):
    only possible between IPv6 addresses (the key is a 32-bit hash of them)."""
    seen: dict[int, str] = {}
    out = {}
    for ip in node_ips:
        k = node_key(ip)
        if k in seen and seen[k] != ip:
            out[ip] = seen[k]
        else:
            seen.setdefault(k, ip)
    return out


def sync_tunnels(root: str, want: Mapping[str, TunnelValue]) -> list[str]:
    """Make the map hold exactly ``want`` (node IP -> entry): new and changed entries first, then
    the others deleted. Returns the node IPs whose entries were deleted."""
    fd = syscall.obj_get(layouts_c.pin_path(root, "tunnels"))
    try:
        for ip, value in want.items():
            syscall.map_update(fd, bytes(TunnelKey(node_ip=node_key(ip))), bytes(value))
        wanted = {node_key(ip) for ip in want}
        removed = []
        for k in list(syscall.map_keys(fd, ctypes.sizeof(TunnelKey))):
            if TunnelKey.from_buffer_copy(k).node_ip not in wanted:
                raw = syscall.map_lookup(fd, k, ctypes.sizeof(TunnelValue))
                syscall.map_delete(fd, k)
                if raw:
                    removed.append(entry_ip(TunnelValue.from_buffer_copy(raw)))
        return removed
    finally:
        os.close(fd)
