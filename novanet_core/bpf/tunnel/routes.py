"""Routes to remote PodCIDRs straight over the underlay, for tunnels done wholly in BPF (no tunnel
device): they carry the node's own traffic to remote pods (plain IP; the remote node forwards it
to the pod) and, through their MTU, the ICMP frag-needed answer for an oversized DF packet the
encap program hands back to the stack. A routing backend that routes PodCIDRs straight to their
nodes over one L2 segment (host-gw style) installs the same routes for all traffic."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import subprocess
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from novanet_core import netlink
from novanet_core.protocols import RTPROT_NOVANET

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)


def nexthop(ipr: IPRoute, node_ip: str) -> str:
    """The underlay next hop towards ``node_ip`` (the node itself when it is on-link)."""
    try:
        r = ipr.route("get", dst=node_ip)[0]
    except netlink.NetlinkError:
        return node_ip
    return r.get_attr("RTA_GATEWAY") or node_ip


def nexthops(node_ips: Iterable[str]) -> dict[str, str]:
    """``nexthop`` of each of ``node_ips``, from one iproute2 process (``ip -batch`` of ``route
    get``): a netlink request each through pyroute2 took 9 ms apiece, 9 s of an agent's start with
    999 other nodes on this loaded machine. Addresses the kernel has no route to keep themselves,
    as in ``nexthop``; without iproute2 it falls back to that, one request each."""
    ips = list(dict.fromkeys(node_ips))
    out = {ip: ip for ip in ips}
    if not ips:
        return out
    try:
        p = subprocess.run(["ip", "-j", "-force", "-batch", "-"], input="".join(f"route get {ip}\n" for ip in ips),
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("ip -batch route get failed (%s); asking one node at a time", e)
        with netlink.IPRoute() as ipr:
            return {ip: nexthop(ipr, ip) for ip in ips}
    canonical = {str(ipaddress.ip_address(ip)): ip for ip in ips}
    for line in p.stdout.splitlines():  # one JSON array per route get that found a route
        try:
            found = json.loads(line)
        except ValueError:
            continue
        for r in found if isinstance(found, list) else ():
            ip = canonical.get(str(r.get("dst", "")))
            if ip is not None and r.get("gateway"):
                out[ip] = str(r["gateway"])
    return out


def sync_underlay_routes(ipr: IPRoute, ifindex: int, mtu: int, want: Mapping[str, str], what: str,
                         family: int = 4) -> None:
    """Make the node's NovaNet routes to PodCIDRs of ``family`` exactly ``want`` (PodCIDR -> next
    hop of that family), out of ``ifindex`` with ``mtu``. ``what`` names the plugin in log lines."""
    af, host_len = (2, 32) if family == 4 else (10, 128)
    have = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.get_routes(family=af, proto=RTPROT_NOVANET)
            if r["dst_len"] < host_len and r.get_attr("RTA_DST")}
    for cidr in have - set(want):
        try:
            ipr.route("del", dst=cidr, proto=RTPROT_NOVANET, family=af)
        except netlink.NetlinkError as e:
            if e.code != errno.ESRCH:
                log.warning("%s: removing route %s failed: %s", what, cidr, e)
    for cidr, gateway in want.items():
        try:
            ipr.route("replace", dst=cidr, gateway=gateway, oif=ifindex, proto=RTPROT_NOVANET, metrics={"mtu": mtu},
                      family=af)
        except netlink.NetlinkError as e:
            log.error("%s: route %s via %s failed: %s", what, cidr, gateway, e)
