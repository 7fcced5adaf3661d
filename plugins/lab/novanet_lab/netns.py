"""Network namespaces and the underlay: named netns (pyroute2), a bridge netns, per-thread setns.

The underlay is a Linux bridge ``br0`` in its own netns ``<lab>.underlay`` holding the first
address of each range of ``underlay.cidr``; each node netns gets ``eth0`` (the peer of
``u-<node index>`` on the bridge) with its node address per family. Veths are created from inside
the underlay netns so their names never collide with anything in the host netns. IPv6 addresses
are added without duplicate address detection: every address is planned by the lab, and a
tentative address would make the first seconds of a lab unreachable over IPv6.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Sequence

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.netns import enter, in_netns
from novanet_lab.errors import LabError
from novanet_lab.paths import NETNS_DIR

UNDERLAY_BRIDGE = "br0"
NODE_UNDERLAY_IF = "eth0"
IFA_F_NODAD = 0x02  # linux/if_addr.h

# An interface address: (address, prefix length).
IfAddr = tuple[str, int]


def _add_addrs(ipr: IPRoute, index: int, addrs: Sequence[IfAddr]) -> None:
    for address, plen in addrs:
        if ":" in address:
            ipr.addr("add", index=index, address=address, prefixlen=plen, flags=IFA_F_NODAD)
        else:
            ipr.addr("add", index=index, address=address, prefixlen=plen)


def list_netns(prefix: str) -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    if exists(name):
        raise LabError(f"network namespace {name} already exists (a previous lab not cleaned up? run `novanet lab down`)")
    try:
        netns.create(name)
    except OSError as e:
        raise LabError(f"cannot create network namespace {name}: {e}") from None
    # Containers and nodes both start with loopback up (the runtime's loopback plugin does this).
    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def remove(name: str) -> None:
    try:
        netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            raise


def inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def set_sysctl(name: str, key: str, value: str) -> None:
    """Write a per-netns sysctl (net.*): /proc/sys/net follows the netns of the thread that opens it."""
    with entered(name):
        with open(f"/proc/sys/{key.replace('.', '/')}", "w") as f:
            f.write(value)


# Entering a netns is the core's (novanet_core.netns): setns is per thread, and sockets keep the
# netns they were created in, which is what lets one probing process hold sockets in many pods.
setns_thread = enter  # the calling thread into the netns at a path, for good
entered = in_netns  # the body with this thread in netns ``name``, switching back after


def build_underlay(underlay_ns: str, gateways: Sequence[IfAddr], mtu: int) -> None:
    create(underlay_ns)
    with IPRoute(netns=underlay_ns) as ipr:
        ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge")
        br = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
        ipr.link("set", index=br, mtu=mtu, state="up")
        _add_addrs(ipr, br, gateways)


def attach_node(underlay_ns: str, index: int | str, node_ns: str, addrs: Sequence[IfAddr], mtu: int) -> None:
    """Cable node netns ``node_ns`` to the underlay bridge and give it its addresses."""
    port = f"u-{index}"
    try:
        with IPRoute(netns=underlay_ns) as ipr:
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": NODE_UNDERLAY_IF, "net_ns_fd": node_ns})
            idx = ipr.link_lookup(ifname=port)[0]
            br = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            ipr.link("set", index=idx, master=br, mtu=mtu, state="up")
        with IPRoute(netns=node_ns) as ipr:
            eth = ipr.link_lookup(ifname=NODE_UNDERLAY_IF)[0]
            ipr.link("set", index=eth, mtu=mtu, state="up")
            _add_addrs(ipr, eth, addrs)
    except NetlinkError as e:
        raise LabError(f"cannot cable {node_ns} to the underlay: {e}") from None


def prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


def on_underlay(ips: Sequence[str], underlay_cidrs: Sequence[str]) -> list[IfAddr]:
    """Each address with the prefix length of the underlay range of its family."""
    plens = {ipaddress.ip_network(c).version: prefixlen(c) for c in underlay_cidrs}
    return [(ip, plens[ipaddress.ip_address(ip).version]) for ip in ips]


def build_outside(underlay_ns: str, outside_ns: str, addrs: Sequence[IfAddr], mtu: int,
                  addresses: Sequence[str]) -> None:
    """The host outside the cluster: cabled to the underlay like a node, ``addresses`` on its loopback,
    no route to any pod address (only the underlay subnets are connected)."""
    create(outside_ns)
    attach_node(underlay_ns, "out", outside_ns, addrs, mtu)
    try:
        with IPRoute(netns=outside_ns) as ipr:
            _add_addrs(ipr, ipr.link_lookup(ifname="lo")[0], [(a, 128 if ":" in a else 32) for a in addresses])
    except NetlinkError as e:
        raise LabError(f"cannot give {outside_ns} its addresses {', '.join(addresses)}: {e}") from None


def default_route(node_ns: str, gateway: str) -> None:
    """A node's way out of the cluster (pods reach the outside host through it), in the gateway's family."""
    dst = "::/0" if ":" in gateway else "0.0.0.0/0"
    try:
        with IPRoute(netns=node_ns) as ipr:
            ipr.route("replace", dst=dst, gateway=gateway)
    except NetlinkError as e:
        raise LabError(f"cannot add the default route via {gateway} in {node_ns}: {e}") from None
