"""Pod interface plumbing with pyroute2: the veth pair, addresses, routes and MTU.

Layout (same for every datapath): per family, the pod gets ``IP/32`` (IPv6: ``IP/128``, without
duplicate address detection, so the address is usable at once) on ``ifname`` with a link-scope
route to the gateway (the PodCIDR's first address) and a default route via it, so every packet
leaves through the veth towards the host side, where the datapath takes over. The host side is
named ``nv<containerid[:11]>``, as the guide and the original NovaNet name it.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.netns import netns_iproute

log = logging.getLogger(__name__)

HOST_PREFIX = "nv"
IFA_F_NODAD = 0x02
AF_INET, AF_INET6 = 2, 10


class PodNetError(Exception):
    pass


def host_end_without_dad(ifname: str) -> None:
    """Make the host end's IPv6 link-local address usable the moment it appears (no duplicate
    address detection). Call before the pod end comes up: the address is made at carrier-up.

    The node reaches a pod's IPv6 address by neighbour discovery on this veth, and the kernel sends
    no solicitation from an interface whose link-local address is still tentative, so for the 1-2 s
    of detection every IPv6 packet the node's stack routes to a new pod (native routing: other
    nodes' pods) was lost. Only the pod end, with addresses NovaNet chose, shares the link.
    """
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad", "w") as f:  # the caller's netns
            f.write("0")
    except OSError as e:  # IPv6 disabled on the node: no link-local address to detect
        log.debug("accept_dad of %s left as is: %s", ifname, e)


def host_ifname(container_id: str) -> str:
    return f"{HOST_PREFIX}{container_id[:11]}"


def _tmp_ifname(container_id: str) -> str:
    # The pod-side end is created under a unique temporary name directly inside the pod netns,
    # then renamed: two pods' "eth0" never meet in one namespace.
    return f"nt{container_id[:11]}"


def _mac_tail(ip: str) -> bytes:
    # IPv4: the address itself; IPv6 (a pod whose primary family is IPv6): the last 4 bytes of
    # the address's SHA-256, as the original NovaNet derived them.
    addr = ipaddress.ip_address(ip)
    return addr.packed if addr.version == 4 else hashlib.sha256(addr.packed).digest()[-4:]


def pod_mac(ip: str) -> str:
    """Deterministic, locally administered MAC from the pod's primary IP (02:fe:a:b:c:d), as the original."""
    return "02:fe:" + ":".join(f"{b:02x}" for b in _mac_tail(ip))


def host_mac(ip: str) -> str:
    return "02:fd:" + ":".join(f"{b:02x}" for b in _mac_tail(ip))


@dataclass
class PodLink:
    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_mac: str


def lookup(ipr: IPRoute, name: str) -> int | None:
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None



def configure_pod_end(pod: IPRoute, idx: int, ip: str, gateway: str, more: Sequence[tuple[str, str]] = ()) -> None:
    """Address, up, loopback up, and the routes: IP/32, link-scope route to the gateway, default via it;
    the same for every further family's ``(ip, gateway)`` in ``more`` (IPv6: /128)."""
    families = [(ip, gateway), *more]
    for addr, _ in families:
        if ":" in addr:
            pod.addr("add", index=idx, address=addr, prefixlen=128, flags=IFA_F_NODAD)
        else:
            pod.addr("add", index=idx, address=addr, prefixlen=32)
    pod.link("set", index=idx, state="up")
    lo = lookup(pod, "lo")
    if lo is not None:
        pod.link("set", index=lo, state="up")
    for addr, gw in families:
        v6 = ":" in addr
        pod.route("add", dst=f"{gw}/{128 if v6 else 32}", oif=idx, scope=253)  # scope link
        pod.route("add", dst="::/0" if v6 else "0.0.0.0/0", gateway=gw, oif=idx)


def create(container_id: str, netns: str, ifname: str, ip: str, gateway: str, mtu: int,
           more: Sequence[tuple[str, str]] = ()) -> PodLink:
    """Create and configure the pair; raise PodNetError with a clear message on any failure.

    One netlink socket per namespace for the whole operation: opening sockets dominates the cost
    of an ADD, and the runtime waits on it.
    """
    if not os.path.exists(netns):
        raise PodNetError(f"network namespace {netns} does not exist")
    hname, tname = host_ifname(container_id), _tmp_ifname(container_id)
    hmac, pmac = host_mac(ip), pod_mac(ip)
    with netns_iproute(netns) as pod, IPRoute() as host:
        if lookup(pod, ifname) is not None:
            raise PodNetError(f"interface {ifname} already exists in {netns}")
        stale_tmp = lookup(pod, tname)
        if stale_tmp is not None:  # left over by a crash mid-ADD
            pod.link("del", index=stale_tmp)
        stale = lookup(host, hname)
        if stale is not None:
            host.link("del", index=stale)
        try:
            host.link("add", ifname=hname, kind="veth", address=hmac, mtu=mtu,
                      peer={"ifname": tname, "net_ns_fd": netns, "address": pmac, "mtu": mtu})
            hidx = lookup(host, hname)
            assert hidx is not None
            host_end_without_dad(hname)
            host.link("set", index=hidx, state="up")
        except NetlinkError as e:
            raise PodNetError(f"creating veth {hname}: {e}") from None
        try:
            tidx = lookup(pod, tname)
            if tidx is None:
                raise PodNetError(f"pod end {tname} did not appear in {netns}")
            pod.link("set", index=tidx, ifname=ifname)
            configure_pod_end(pod, tidx, ip, gateway, more)
        except (NetlinkError, PodNetError) as e:
            host.link("del", index=hidx)
            raise PodNetError(f"configuring {ifname} in {netns}: {e}") from None
    return PodLink(host_ifname=hname, host_ifindex=hidx, host_mac=hmac, pod_mac=pmac)


def delete(container_id: str) -> bool:
    """Delete the host end (the kernel removes the pod end with it). True if something was removed."""
    with IPRoute() as host:
        idx = lookup(host, host_ifname(container_id))
        if idx is None:
            return False
        try:
            host.link("del", index=idx)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise
        return True


def host_link_exists(name: str) -> int | None:
    with IPRoute() as host:
        return lookup(host, name)


def check(container_id: str, netns: str, ifname: str, ip: str, more: Sequence[str] = ()) -> list[str]:
    """What is wrong with an existing attachment (empty list = fine); ``more``: its other families' IPs."""
    problems = []
    if host_link_exists(host_ifname(container_id)) is None:
        problems.append(f"host interface {host_ifname(container_id)} is missing")
    if not os.path.exists(netns):
        return problems + [f"network namespace {netns} is gone"]
    with netns_iproute(netns) as pod:
        idx = lookup(pod, ifname)
        if idx is None:
            return problems + [f"interface {ifname} is missing in {netns}"]
        for addr in (ip, *more):
            fam = AF_INET6 if ":" in addr else AF_INET
            have = {a.get_attr("IFA_ADDRESS") for a in pod.get_addr(index=idx, family=fam)}
            if addr not in have:
                problems.append(f"{ifname} lacks address {addr} (has {sorted(have)})")
            if not any(r.get_attr("RTA_GATEWAY") for r in pod.get_routes(family=fam, oif=idx)):
                problems.append(f"{ifname} has no {'IPv6' if fam == AF_INET6 else 'IPv4'} default route")
    return problems


def list_host_veths() -> dict[str, int]:
    """Host-side pod veths in this namespace: name -> ifindex."""
    out = {}
    with IPRoute() as host:
        for link in host.get_links():
            name = link.get_attr("IFLA_IFNAME")
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            if kind == "veth" and name.startswith(HOST_PREFIX) and len(name) == len(HOST_PREFIX) + 11:
                out[name] = link["index"]
    return out
