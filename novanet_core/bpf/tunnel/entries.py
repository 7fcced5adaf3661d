"""The shared ``tunnels`` map (remote node IP -> how to reach it), written by the active tunnel
plugin and read by the datapath before its tail call and by the tunnel programs."""

from __future__ import annotations

import ctypes
import ipaddress
import os
from collections.abc import Mapping

from novanet_core.bpf import layouts_c, syscall
from novanet_core.bpf.layouts import TunnelKey, TunnelValue


def ip_num(ip: str) -> int:
    """An IPv4 address as the maps hold it (host-order u32)."""
    return int(ipaddress.IPv4Address(ip))


def sync_tunnels(root: str, want: Mapping[str, TunnelValue]) -> list[str]:
    """Make the map hold exactly ``want`` (node IP -> entry): new and changed entries first, then
    the others deleted. Returns the node IPs whose entries were deleted."""
    fd = syscall.obj_get(layouts_c.pin_path(root, "tunnels"))
    try:
        for ip, value in want.items():
            syscall.map_update(fd, bytes(TunnelKey(node_ip=ip_num(ip))), bytes(value))
        wanted = {ip_num(ip) for ip in want}
        removed = []
        for k in list(syscall.map_keys(fd, ctypes.sizeof(TunnelKey))):
            node_ip = TunnelKey.from_buffer_copy(k).node_ip
            if node_ip not in wanted:
                syscall.map_delete(fd, k)
                removed.append(str(ipaddress.IPv4Address(node_ip)))
        return removed
    finally:
        os.close(fd)
