"""The warm pool: host-side veth pairs made, brought up and (eBPF) attached ahead of demand.

Building a pod's pair on the ADD path costs the kernel more than everything else the ADD does:
with tcx, each of the two link creates waits out an RCU grace period (5-15 ms each here; see
docs/benchmarks.md). A member of the pool already has all of that, so an ADD only renames the
host end to the guide's ``nv<containerid[:11]>`` (and sets its MAC), moves the peer into the pod
netns as ``eth0`` with the pod MAC in the same netlink request, addresses it and routes, then
writes the maps. The programs hold no per-pod state, so they can be attached before the pod
exists; identity lives in the maps the ADD writes.

Members live in the node netns as ``nvwarm<8 hex>`` (host end) and ``nvwpeer<8 hex>`` (peer):
names the pod-veth reconcile never takes for a pod's (``nv`` + 11 characters). They are
reconciled like everything else: on agent start every pair still whole in the node netns is
adopted (and brought up: a kill -9 between creating a pair and setting it up leaves it down), a
host end whose peer is gone (a kill -9 between moving the peer and renaming the host end) is
deleted, and the pool is refilled once ADDs are quiet (``warmPool.refillIdleMs``): building
members takes the rtnl lock across a grace period and would stall a burst of ADDs. An ADD checks
the member it takes (both ends still there under their names, host end up); one that is not usable
is deleted and the next one (or a pair built on the spot) is used instead, so a member that went
bad is never handed to a pod. ``status`` lists the members, so that whoever audits the node's
veths can tell the pool's from orphans.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP

from novanet_core.agent import podnet
from novanet_core.agent.podnet import PodLink
from novanet_core.netns import netns_iproute

log = logging.getLogger(__name__)

HOST_PREFIX = "nvwarm"
PEER_PREFIX = "nvwpeer"


@dataclass
class Member:
    host_ifname: str
    host_ifindex: int
    peer_ifindex: int

    @property
    def peer_ifname(self) -> str:
        return PEER_PREFIX + self.host_ifname[len(HOST_PREFIX):]


def _members(ipr: IPRoute) -> tuple[list[Member], list[tuple[int, str]]]:
    """Whole pairs in this netns, and host ends of ours whose peer is not here (to delete)."""
    links = {link["index"]: link for link in ipr.get_links()}
    whole, broken = [], []
    for idx, link in links.items():
        name = link.get_attr("IFLA_IFNAME") or ""
        if not name.startswith(HOST_PREFIX):
            continue
        peer_idx = link.get_attr("IFLA_LINK")
        peer = links.get(peer_idx) if link.get_attr("IFLA_LINK_NETNSID") is None else None
        peer_name = peer.get_attr("IFLA_IFNAME") if peer is not None else ""
        if peer is not None and peer_name == PEER_PREFIX + name[len(HOST_PREFIX):]:
            whole.append(Member(name, idx, peer_idx))
        else:
            broken.append((idx, name))
    # a peer left without its host end cannot exist for veth (they die together); nothing else to find
    return whole, broken


class WarmPool:
    def __init__(self, size: int, refill_idle_ms: int, mtu: int, attach: Callable[[str], None] | None,
                 release: Callable[[str], None] | None):
        """``attach``/``release``: put the datapath's programs on a member's host end and take them
        off (None: the datapath has no programs to put there)."""
        self.size, self.idle = size, refill_idle_ms / 1000.0
        self.mtu = mtu
        self._attach, self._release = attach, release
        self._free: list[Member] = []
        self._building: set[str] = set()  # host names of members being made (listed by status too)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_take = 0.0
        self.taken = self.built = self.missed = self.discarded = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> dict[str, int]:
        """Adopt the members a previous agent left, delete broken ones, start the refiller."""
        with IPRoute() as ipr:
            whole, broken = _members(ipr)
            for idx, name in broken:
                self._delete(ipr, Member(name, idx, 0))
            for m in whole[self.size:]:  # the pool got smaller
                self._delete(ipr, m)
            adopted = []
            for m in whole[: self.size]:
                if self._usable(ipr, m):
                    podnet.host_end_without_dad(m.host_ifname)  # a member an older agent made
                    adopted.append(m)
                else:
                    self._delete(ipr, m)
        with self._lock:
            self._free = adopted
        for m in self._free:
            self._attach_quietly(m)
        threading.Thread(target=self._refiller, name="warm-pool", daemon=True).start()
        self._wake.set()
        removed = len(broken) + len(whole) - len(adopted)
        log.info("warm pool: %d adopted, %d removed, size %d", len(adopted), removed, self.size)
        return {"adopted": len(adopted), "removed": removed}

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def reattach(self) -> None:
        """After the dataplane restarted (its reconcile unpins links of devices without an endpoint)."""
        with self._lock:
            members = list(self._free)
        for m in members:
            self._attach_quietly(m)

    # ------------------------------------------------------------------ ADD
    def take(self) -> Member | None:
        """The newest free member, unchecked (``take_usable`` checks it), or None when empty."""
        with self._lock:
            self._last_take = time.monotonic()
            if not self._free:
                self.missed += 1
                return None
            self.taken += 1
            m = self._free.pop()
        self._wake.set()
        return m

    def take_usable(self, ipr: IPRoute) -> Member | None:
        """A free member that is ready to be a pod's interface, or None (the caller builds the pair).

        Members that are not (deleted behind the pool's back, a peer gone, a host end that will not
        come up) are deleted: an ADD given one would fail in the datapath (no route on a down link)."""
        while (m := self.take()) is not None:
            if self._usable(ipr, m):
                return m
            log.warning("warm pool: member %s is not usable; deleting it", m.host_ifname)
            with self._lock:
                self.discarded += 1
            self._delete(ipr, m)
        return None

    def _usable(self, ipr: IPRoute, m: Member) -> bool:
        """Both ends still here under their names and the host end up (set up if it is down)."""
        try:
            host = ipr.get_links(m.host_ifindex)[0]
            peer = ipr.get_links(m.peer_ifindex)[0]
        except (NetlinkError, IndexError):
            return False
        if host.get_attr("IFLA_IFNAME") != m.host_ifname or peer.get_attr("IFLA_IFNAME") != m.peer_ifname:
            return False
        if not host["flags"] & IFF_UP:
            try:
                ipr.link("set", index=m.host_ifindex, state="up")
            except NetlinkError:
                return False
        return True

    def give_back(self, m: Member) -> None:
        """A member an ADD took but did not use (it failed before touching it)."""
        with self._lock:
            self._free.append(m)

    def status(self) -> dict[str, Any]:
        with self._lock:
            members = [{"host": m.host_ifname, "peer": m.peer_ifname, "state": "ready"} for m in self._free]
            members += [{"host": h, "peer": PEER_PREFIX + h[len(HOST_PREFIX):], "state": "building"}
                        for h in sorted(self._building)]
            return {"size": self.size, "ready": len(self._free), "taken": self.taken, "built": self.built,
                    "missed": self.missed, "discarded": self.discarded, "members": members}

    # ------------------------------------------------------------------ refill
    def _refiller(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            while not self._stop.is_set():
                with self._lock:
                    need = self.size - len(self._free)
                    quiet = time.monotonic() - self._last_take
                if need <= 0:
                    break
                if quiet < self.idle:  # an ADD burst: wait until it is over
                    self._stop.wait(self.idle - quiet)
                    continue
                try:
                    m = self._build()
                except Exception as e:  # netlink, or the dataplane refusing or gone: retry, never die
                    log.warning("warm pool: building a member failed: %s (retrying in 1 s)", e)
                    self._stop.wait(1.0)
                    continue
                with self._lock:
                    self._free.append(m)
                    self._building.discard(m.host_ifname)
                    self.built += 1

    def _build(self) -> Member:
        suffix = secrets.token_hex(4)
        host, peer = HOST_PREFIX + suffix, PEER_PREFIX + suffix
        with self._lock:
            self._building.add(host)
        try:
            return self._make(host, peer)  # the refiller moves it from _building to _free
        except BaseException:
            with self._lock:
                self._building.discard(host)
            raise

    def _make(self, host: str, peer: str) -> Member:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host, kind="veth", mtu=self.mtu, peer={"ifname": peer, "mtu": self.mtu})
            hidx = ipr.link_lookup(ifname=host)[0]
            pidx = ipr.link_lookup(ifname=peer)[0]
            podnet.host_end_without_dad(host)
            ipr.link("set", index=hidx, state="up")
            m = Member(host, hidx, pidx)
            try:
                if self._attach is not None:
                    self._attach(host)
            except Exception:
                self._delete(ipr, m)
                raise
        return m

    def _attach_quietly(self, m: Member) -> None:
        if self._attach is None:
            return
        try:
            self._attach(m.host_ifname)
        except Exception as e:  # the ADD attaches anyway (dp.endpoint.add); this only saves it time
            log.warning("warm pool: attaching %s failed: %s", m.host_ifname, e)

    def _delete(self, ipr: IPRoute, m: Member) -> None:
        if self._release is not None:
            try:
                self._release(m.host_ifname)
            except Exception as e:
                log.warning("warm pool: releasing %s failed: %s", m.host_ifname, e)
        try:
            ipr.link("del", index=m.host_ifindex)
        except NetlinkError:
            pass


def plumb(pool: WarmPool, container_id: str, netns: str, ifname: str, ip: str, gateway: str,
          mtu: int, more: Sequence[tuple[str, str]] = ()) -> tuple[PodLink, Member] | None:
    """Turn a usable member into the pod's interface (what podnet.create builds from scratch), or
    None when the pool has none (the caller builds the pair). ``more``: the other families'
    ``(ip, gateway)``.

    Until the peer has moved, a failure hands the member back intact; after, the pair is deleted
    (the kernel takes the peer with the host end)."""
    if not os.path.exists(netns):
        raise podnet.PodNetError(f"network namespace {netns} does not exist")
    hname = podnet.host_ifname(container_id)
    hmac, pmac = podnet.host_mac(ip), podnet.pod_mac(ip)
    with netns_iproute(netns) as pod, IPRoute() as host:
        if podnet.lookup(pod, ifname) is not None:
            raise podnet.PodNetError(f"interface {ifname} already exists in {netns}")
        m = pool.take_usable(host)
        if m is None:
            return None
        # One request: into the pod netns, renamed, its MAC (and MTU when the config overrides it).
        peer = {"index": m.peer_ifindex, "net_ns_fd": netns, "ifname": ifname, "address": pmac}
        if mtu != pool.mtu:
            peer["mtu"] = mtu
        try:
            stale = podnet.lookup(host, hname)
            if stale is not None:  # left over by a crash mid-ADD
                host.link("del", index=stale)
            host.link("set", **peer)
        except NetlinkError as e:
            pool.give_back(m)  # untouched: still a whole pair in the node netns
            raise podnet.PodNetError(f"moving the pooled peer into {netns}: {e}") from None
        try:
            attrs = {"index": m.host_ifindex, "ifname": hname, "address": hmac}
            if mtu != pool.mtu:
                attrs["mtu"] = mtu
            host.link("set", **attrs)  # renamed while up (Linux >= 6.2 allows it)
            tidx = podnet.lookup(pod, ifname)
            if tidx is None:
                raise podnet.PodNetError(f"{ifname} did not appear in {netns}")
            podnet.configure_pod_end(pod, tidx, ip, gateway, more)
        except (NetlinkError, podnet.PodNetError) as e:
            try:
                host.link("del", index=m.host_ifindex)
            except NetlinkError:
                pass
            raise podnet.PodNetError(f"configuring {ifname} in {netns}: {e}") from None
    return podnet.PodLink(host_ifname=hname, host_ifindex=m.host_ifindex, host_mac=hmac, pod_mac=pmac), m
