"""The ``frr-bgp`` routing backend: keeps a running FRR at the routing state NovaNet wants.

One reconcile step reads FRR's running config, diffs it against the desired state (built from
the config and the node list) and sends only the difference through vtysh. bgpd is never
restarted, and sessions are only touched by the commands that must touch them. A change FRR
rejects half-way is rolled back to the config read just before, reported in ``status()``, and
retried with backoff. The same step runs on every node change and every
``reconcileInterval`` seconds, which is also how a restarted bgpd (empty config) or an agent
restarted after SIGKILL (FRR still holding everything) converge: in the second case the diff is
empty, so nothing is sent and no session flaps.

A restarted bgpd is configured only after the node's routes to the other nodes have been copied
into a table of their own (``HOLD_TABLE``, looked up just before main), where they stay until the
new bgpd has them again (see :meth:`FrrBgpRouting._hold_routes`): zebra keeps a crashed bgpd's
routes as stale, but the new bgpd tells it to sweep them as soon as a session comes up with a
peer that sends the Restart State bit, which FRR sends for ``restart-time`` seconds after its own
start, so that sweep comes before the routes are learned again.

IPv6: a node with an IPv6 underlay address advertises its IPv6 PodCIDR too (see
:mod:`novanet_frr_bgp.model` for which session carries it); its blackhole route and the held
routes are kept per family the same way.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.backends import BackendContext, ConfigError
from novanet_core.protocols import RTPROT_BGP, RTPROT_NOVANET_ROUTING
from novanet_core.types import NodeInfo
from novanet_frr_bgp import frrconf
from novanet_frr_bgp.model import RoutingState, carried_families, desired_state
from novanet_frr_bgp.settings import settings_or_raise
from novanet_frr_bgp.vtysh import FrrUnavailable, Vtysh

log = logging.getLogger("novanet.routing.frr")

RTN_BLACKHOLE = 6
FIRST_RETRY_BACKOFF = 2.0
MAX_RETRY_BACKOFF = 60.0
# Until the agent first reports the node list, neighbors FRR already has are kept: a restarted
# agent must not delete (and so flap) every session in the moment before its first sync_nodes.
# The agent skips sync_nodes when there are no other nodes, so after this long an empty list is
# taken as the truth.
NODES_GRACE = 60.0
# Where the routes of a restarted bgpd are held (a table of NovaNet's own; rule just before main,
# 32766, so that main's routes, the new bgpd's included, take over the moment the hold ends).
HOLD_TABLE = 98
HOLD_RULE_PRIORITY = 32765
# The hold ends once these many reconcile ticks in a row found the new bgpd with every neighbor
# established and every held prefix back in main (one tick could fall between zebra's sweep of
# the stale routes and its install of the new ones).
HOLD_RELEASE_TICKS = 2
FAMILIES = (socket.AF_INET, socket.AF_INET6)


class FrrBgpRouting:
    name = "frr-bgp"

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.settings = settings_or_raise(ctx.config.routing.settings)
        s = self.settings
        self.vtysh = Vtysh(s.vtysh, s.pathspace, s.vtySocket, s.commandTimeout)
        self.lock = threading.RLock()
        self.local: NodeInfo | None = ctx.node
        self.remotes: list[NodeInfo] = []
        self.advertise = True
        self.connected = False
        self.daemons: list[str] = []
        self.applies = self.rollbacks = self.failures = 0
        self.reconciles = 0  # times FRR's running config was read and compared with the desired one
        self.last_apply: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._failed_want: str | None = None
        self._nodes_known = False
        self._started_at = time.monotonic()
        self.held: list[str] = []  # prefixes held across a bgpd restart (HOLD_TABLE)
        self._hold_until = 0.0
        self._hold_ok_ticks = 0

    # ------------------------------------------------------------------ RoutingBackend
    @property
    def ip_families(self) -> tuple[int, ...]:
        """The families whose PodCIDRs this node can advertise: those of its underlay addresses
        (a route's next hop is an address of the route's family)."""
        return carried_families(self.local) if self.local is not None else (4,)

    def advertised_cidrs(self) -> list[str]:
        if self.local is None:
            return []
        return [c for c in self.local.pod_cidrs if (6 if ":" in c else 4) in self.ip_families]

    def start(self, local: NodeInfo) -> None:
        self.local = local
        self._started_at = time.monotonic()
        self._kernel_setup(local)
        deadline = time.monotonic() + self.settings.waitTimeout
        while True:
            rep = self.reconcile("start")
            if self.connected:
                break
            if time.monotonic() >= deadline:
                raise ConfigError(f"routing.settings: FRR not reachable with `{' '.join(self.vtysh.argv())}` after "
                                  f"{self.settings.waitTimeout:.0f} s: {rep.get('error')} (check pathspace/vtySocket)")
            time.sleep(1.0)
        self._thread = threading.Thread(target=self._loop, name="frr-reconcile", daemon=True)
        self._thread.start()
        log.info("frr-bgp started: AS %s, router-id %s, advertising %s", self.asn, self._want().bgp.router_id,  # type: ignore[union-attr]
                 ", ".join(self.advertised_cidrs()))

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        with self.lock:
            self.local, self.remotes = local, list(remotes)
            self._nodes_known = True
            self._retry_at = 0.0  # a new desired state deserves an immediate attempt
        self.reconcile("nodes changed")

    def stop(self, withdraw: bool) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.commandTimeout + 1)
        if withdraw and self.local is not None:
            self.set_advertise(False)
            for cidr in self.advertised_cidrs():
                self._blackhole(cidr, present=False)
            self._release_holds("agent stopped")

    def status(self) -> dict[str, Any]:
        s = self.settings
        mode = "+".join(m for m, on in (("full-mesh", s.fullMesh), ("peers", bool(s.peers))) if on) or "none"
        return {
            "backend": self.name,
            "connected": self.connected,
            "daemons": self.daemons,
            "asn": self.asn,
            "routerId": self._want().bgp.router_id if self.local else None,  # type: ignore[union-attr]
            "mode": mode,
            "podCIDR": self.local.pod_cidr if self.local else None,
            "podCIDRs": self.advertised_cidrs(),
            "ipFamilies": list(self.ip_families),
            "advertising": self.advertise,
            "bfd": s.bfd.model_dump(),
            "gracefulRestart": s.gracefulRestart.model_dump(),
            "timers": s.timers.model_dump(),
            "vtysh": self.vtysh.argv(),
            "desiredNeighbors": len(self._want().bgp.neighbors) if self.local else 0,  # type: ignore[union-attr]
            "reconciles": self.reconciles,
            "applies": self.applies,
            "rollbacks": self.rollbacks,
            "failures": self.failures,
            "lastApply": self.last_apply,
            "lastError": self.last_error,
            "heldRoutes": list(self.held),
        }

    # ------------------------------------------------------------------ desired state
    @property
    def asn(self) -> int | None:
        if self.local is None:
            return None
        w = self._want()
        return w.bgp.asn if w.bgp else None

    def _want(self) -> RoutingState:
        assert self.local is not None
        return desired_state(self.local, self.remotes, self.settings, self.advertise)

    def set_advertise(self, on: bool) -> dict[str, Any]:
        with self.lock:
            self.advertise = on
            self._retry_at = 0.0
        return self.reconcile("advertise" if on else "withdraw")

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, reason: str = "periodic") -> dict[str, Any]:
        """One step towards the desired state; returns what was done."""
        with self.lock:
            if self.local is None:
                return {"ok": False, "error": "not started"}
            want = self._want()
            need = {"zebra", "bgpd"} | ({"bfdd"} if want.bfd_profiles else set())
            try:
                self.daemons = sorted(self.vtysh.daemons())
                missing = need - set(self.daemons)
                if missing:
                    raise FrrUnavailable(f"FRR daemons not running: {', '.join(sorted(missing))}")
                cur, profile = frrconf.parse_running_config(self.vtysh.running_config())
            except FrrUnavailable as e:
                return self._disconnected(str(e))
            if not self.connected:
                self._event("frr_connected", f"daemons {' '.join(self.daemons)}")
            self.connected = True
            managed = {self.settings.bfdProfile}
            if not self._nodes_known and time.monotonic() - self._started_at < NODES_GRACE:
                want = frrconf.keep_neighbors(want, cur)
            want = self._bfd_once_established(want, cur)
            cmds = frrconf.diff(cur, want, profile, managed)
            self.reconciles += 1
            if not cmds:
                self._failed_want = None
                return {"ok": True, "commands": []}
            if cur.bgp is None and want.bgp is not None and want.bgp.neighbors:
                self._hold_routes()  # a bgpd with no config: one that was (re)started
            key = repr(want)
            if key == self._failed_want and time.monotonic() < self._retry_at:
                return {"ok": False, "error": f"retrying at most every {self._backoff:.0f} s: {self.last_error}"}
            try:
                res = self.vtysh.configure(cmds)
                if res.ok:
                    self.applies += 1
                    after, _ = frrconf.parse_running_config(self.vtysh.running_config())
                    left = frrconf.diff(after, want, profile, managed)
                    self._record(reason, cmds, ok=not left, error=None if not left else
                                 f"FRR did not take: {frrconf.redact(left)}")
                    if left:
                        self._note_failure(key)
                    else:
                        self._failed_want, self._backoff = None, 1.0
                    return {"ok": not left, "commands": frrconf.redact(cmds)}
                return self._rollback(reason, key, cur, profile, managed, cmds, res.failed_command, res.message)
            except FrrUnavailable as e:
                return self._disconnected(str(e))

    def _bfd_once_established(self, want: RoutingState, cur: RoutingState) -> RoutingState:
        """``want`` without BFD on the neighbors that do not have it yet and whose BGP session is
        not established.

        bgpd registers a neighbor's BFD session with the addresses and interface it knows; before
        the BGP session is up that is no source address and no interface, and when the session
        comes up bgpd registers it again with both, so bfdd deletes the session and makes a new
        one. The peer sees that as BFD going down right after its BGP session came up and tears
        the session down with a hard reset (Cease/BFD Down), which drops our routes at once,
        graceful restart or not: after every bgpd restart, a second or two without routes to this
        node. Registered once the session is up, the session has its final parameters from the
        start. A neighbor keeps BFD once it has it, whatever its session does.
        """
        if want.bgp is None:
            return want
        have = cur.bgp.neighbors if cur.bgp is not None else {}
        pending = [a for a, n in want.bgp.neighbors.items() if n.bfd and not (a in have and have[a].bfd)]
        if not pending:
            return want
        try:
            summary = self.vtysh.show_json("show bgp summary json") if cur.bgp is not None else {}
        except (FrrUnavailable, ValueError):
            summary = {}
        peers = _summary_peers(summary)
        neighbors = dict(want.bgp.neighbors)
        for a in pending:
            if (peers.get(a) or {}).get("state") != "Established":
                neighbors[a] = replace(neighbors[a], bfd=False, bfd_profile=None)
        return RoutingState(bgp=replace(want.bgp, neighbors=neighbors), bfd_profiles=want.bfd_profiles)

    def _rollback(self, reason: str, key: str, before: RoutingState, profile: str, managed: set[str],
                  cmds: list[str], failed: str | None, message: str) -> dict[str, Any]:
        """Undo what ran before the rejected command: back to the config read before applying."""
        self.failures += 1
        now, _ = frrconf.parse_running_config(self.vtysh.running_config())
        back = frrconf.diff(now, before, profile, managed)
        rb = self.vtysh.configure(back)
        if rb.ok:
            self.rollbacks += 1
        err = (f"FRR rejected {frrconf.redact([failed])[0] if failed else 'a command'!r}: {message}; "
               + ("rolled back to the previous config" if rb.ok else f"ROLLBACK FAILED ({rb.message}); will retry"))
        log.error("routing change (%s) failed: %s", reason, err)
        self._record(reason, cmds, ok=False, error=err, rolled_back=rb.ok, rollback=back)
        self._note_failure(key)
        return {"ok": False, "error": err, "rolledBack": rb.ok, "commands": frrconf.redact(cmds)}

    def _note_failure(self, key: str) -> None:
        self._backoff = min(self._backoff * 2, MAX_RETRY_BACKOFF) if self._failed_want == key else FIRST_RETRY_BACKOFF
        self._failed_want = key
        self._retry_at = time.monotonic() + self._backoff

    def _record(self, reason: str, cmds: list[str], ok: bool, error: str | None, rolled_back: bool | None = None,
                rollback: list[str] | None = None) -> None:
        self.last_apply = {"time": time.time(), "reason": reason, "ok": ok, "commands": frrconf.redact(c.strip() for c in cmds),
                           "error": error}
        if rolled_back is not None:
            self.last_apply["rolledBack"] = rolled_back
            self.last_apply["rollbackCommands"] = frrconf.redact(c.strip() for c in rollback or [])
        if error:
            self.last_error = error
        self._event("bgp_config_changed" if ok else "bgp_config_failed", error or f"{len(cmds)} commands ({reason})")

    def _disconnected(self, why: str) -> dict[str, Any]:
        if self.connected:
            self._event("frr_disconnected", why)
            log.warning("FRR not reachable: %s", why)
        self.connected = False
        self.last_error = why
        return {"ok": False, "error": why}

    def _event(self, kind: str, detail: str) -> None:
        self.events.append({"time": time.time(), "type": kind, "detail": detail})

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcileInterval):
            try:
                if self.local is not None and self.settings.blackholeRoute and self.advertise:
                    for cidr in self.advertised_cidrs():
                        self._blackhole(cidr, present=True)
                self.reconcile()
                if self.held:
                    self._release_when_relearned()
            except Exception:  # the loop is the retry mechanism; it must outlive any one failure
                log.exception("routing reconcile failed")

    # ------------------------------------------------------------------ kernel side
    def _kernel_setup(self, local: NodeInfo) -> None:
        if self.settings.rpFilter is not None:
            dev = self.ctx.underlay.name if self.ctx.underlay is not None else None
            for name in ("all", dev):
                if name:
                    p = Path("/proc/sys/net/ipv4/conf", name, "rp_filter")
                    try:
                        p.write_text(str(self.settings.rpFilter))
                    except OSError as e:
                        log.warning("cannot set %s: %s", p, e)
        _enable_forwarding({6 if ":" in c else 4 for c in self.advertised_cidrs()})
        if self.settings.blackholeRoute:
            for cidr in self.advertised_cidrs():
                self._blackhole(cidr, present=True)
        self._adopt_holds()

    def _blackhole(self, cidr: str, present: bool) -> None:
        net = ipaddress.ip_network(cidr)
        fam = socket.AF_INET6 if net.version == 6 else socket.AF_INET
        dst, plen = str(net.network_address), net.prefixlen
        try:
            with IPRoute() as ipr:
                if present:
                    # Filter in Python: get_routes(dst=...) asks the kernel for a FIB lookup instead.
                    have = [r for r in ipr.get_routes(family=fam, type=RTN_BLACKHOLE)
                            if r.get_attr("RTA_DST") == dst and r.get("dst_len") == plen]
                    if not any(r.get("proto") == RTPROT_NOVANET_ROUTING for r in have):
                        ipr.route("replace", family=fam, dst=dst, dst_len=plen, type="blackhole",
                                  proto=RTPROT_NOVANET_ROUTING)
                else:
                    ipr.route("del", family=fam, dst=dst, dst_len=plen, type="blackhole", proto=RTPROT_NOVANET_ROUTING)
        except NetlinkError as e:
            if present or e.code not in (3, 2):  # ESRCH/ENOENT: already gone
                log.warning("blackhole route %s (%s): %s", cidr, "add" if present else "del", e)

    # ------------------------------------------------------------------ routes held across a bgpd restart
    def _hold_routes(self) -> None:
        """Copy main's ``proto bgp`` routes into HOLD_TABLE before a restarted bgpd is configured.

        zebra keeps a crashed bgpd's routes as stale for the new one, which sweeps them when it
        sends zebra "route update complete": at once when a session comes up with a peer that
        sets the Restart State bit (FRR's bgp_establish; a peer sets it for ``restart-time``
        seconds after its own bgpd started), before that peer's routes have been received. The
        node would then have no route to that peer's pods for the second or two until they are.
        The held copies (same next hops, no zebra nexthop objects: zebra deletes those with its
        routes) carry the traffic meanwhile; they never replace a route main has.
        """
        now = time.monotonic()
        held = []
        try:
            with IPRoute() as ipr:
                for fam in FAMILIES:
                    routes = [r for r in ipr.get_routes(family=fam, table=254) if r.get("proto") == RTPROT_BGP]
                    held_fam = []
                    for r in routes:
                        dst, plen = r.get_attr("RTA_DST"), r.get("dst_len")
                        hops = _next_hops(r)
                        if dst is None or not hops:
                            continue
                        kw: dict[str, Any] = ({"gateway": hops[0][0], "oif": hops[0][1]} if len(hops) == 1 else
                                              {"multipath": [{"gateway": g, "oif": o} for g, o in hops]})
                        ipr.route("replace", family=fam, table=HOLD_TABLE, dst=dst, dst_len=plen,
                                  proto=RTPROT_NOVANET_ROUTING, **kw)
                        held_fam.append(f"{dst}/{plen}")
                    if held_fam and not self._hold_rule(ipr, fam):
                        ipr.rule("add", family=fam, table=HOLD_TABLE, priority=HOLD_RULE_PRIORITY)
                    held += held_fam
        except NetlinkError as e:
            log.warning("cannot hold routes across the bgpd restart: %s", e)
            return
        if held:
            self.held = sorted(set(self.held) | set(held))
            self._hold_until = now + self.settings.gracefulRestart.restartTime
            self._hold_ok_ticks = 0
            self._event("routes_held", f"bgpd restarted: {len(held)} routes held until it has them again")
            log.info("bgpd restarted without config: holding %s until it has relearned them", ", ".join(held))

    def _release_when_relearned(self) -> None:
        """End the hold once the new bgpd has every neighbor established and main has every held
        prefix again (HOLD_RELEASE_TICKS ticks in a row), or after ``restart-time`` (what the
        peers allow us as well: a route that has not come back by then is withdrawn)."""
        if time.monotonic() >= self._hold_until:
            self._release_holds(f"not all relearned within {self.settings.gracefulRestart.restartTime} s")
            return
        try:
            summary = self.vtysh.show_json("show bgp summary json")
            with IPRoute() as ipr:
                have = {f"{r.get_attr('RTA_DST')}/{r.get('dst_len')}" for fam in FAMILIES
                        for r in ipr.get_routes(family=fam, table=254) if r.get("proto") == RTPROT_BGP}
        except (FrrUnavailable, NetlinkError, ValueError) as e:
            log.debug("hold check: %s", e)
            self._hold_ok_ticks = 0
            return
        peers = _summary_peers(summary)
        want = self._want().bgp.neighbors if self.local else {}  # type: ignore[union-attr]
        up = all((peers.get(a) or {}).get("state") == "Established" for a in want)
        self._hold_ok_ticks = self._hold_ok_ticks + 1 if up and set(self.held) <= have else 0
        if self._hold_ok_ticks >= HOLD_RELEASE_TICKS:
            self._release_holds("relearned")

    def _release_holds(self, why: str) -> None:
        try:
            with IPRoute() as ipr:
                for fam in FAMILIES:
                    for r in ipr.get_routes(family=fam, table=HOLD_TABLE):
                        if r.get("proto") == RTPROT_NOVANET_ROUTING:
                            ipr.route("del", family=fam, table=HOLD_TABLE, dst=r.get_attr("RTA_DST"),
                                      dst_len=r.get("dst_len"), proto=RTPROT_NOVANET_ROUTING)
                    while self._hold_rule(ipr, fam):
                        ipr.rule("del", family=fam, table=HOLD_TABLE, priority=HOLD_RULE_PRIORITY)
        except NetlinkError as e:
            log.warning("cannot release the held routes: %s", e)
            return
        if self.held:
            self._event("routes_released", f"{len(self.held)} held routes released ({why})")
            log.info("held routes %s released: %s", ", ".join(self.held), why)
        self.held = []

    def _adopt_holds(self) -> None:
        """An agent restarted during a hold takes it over (and ends it like its own)."""
        try:
            with IPRoute() as ipr:
                self.held = sorted(f"{r.get_attr('RTA_DST')}/{r.get('dst_len')}" for fam in FAMILIES
                                   for r in ipr.get_routes(family=fam, table=HOLD_TABLE)
                                   if r.get("proto") == RTPROT_NOVANET_ROUTING)
                rule = any(self._hold_rule(ipr, fam) for fam in FAMILIES)
        except NetlinkError as e:
            log.warning("cannot read held routes: %s", e)
            return
        if self.held or rule:
            self._hold_until = time.monotonic() + self.settings.gracefulRestart.restartTime
            self._hold_ok_ticks = 0
            if not self.held:
                self._release_holds("no routes left in the hold table")

    @staticmethod
    def _hold_rule(ipr: IPRoute, family: int = socket.AF_INET) -> bool:
        return any(r.get_attr("FRA_TABLE") == HOLD_TABLE and r.get_attr("FRA_PRIORITY") == HOLD_RULE_PRIORITY
                   for r in ipr.get_rules(family=family))

    # ------------------------------------------------------------------ inspection
    def peers(self) -> list[dict[str, Any]]:
        summary = self.vtysh.show_json("show bgp summary json")
        bfd = {p.get("peer"): p for p in self._bfd_raw()}
        want = self._want().bgp.neighbors if self.local else {}  # type: ignore[union-attr]
        rows = []
        peers = _summary_peers(summary)
        for addr in sorted(set(peers) | set(want), key=_ip_key):
            p = peers.get(addr, {})
            b = bfd.get(addr)
            n = want.get(addr)
            rows.append({
                "neighbor": addr,
                "remoteAs": p.get("remoteAs", n.remote_as if n else None),
                "state": p.get("state", "NotConfigured" if n else "Unknown"),
                "pfxRcvd": p.get("pfxRcd"),
                "pfxSent": p.get("pfxSnt"),
                "bfd": (b.get("status") if b else ("configured" if n and n.bfd else "")),
                "uptime": p.get("peerUptime"),
                "uptimeMsec": p.get("peerUptimeMsec"),
                "establishedEpoch": p.get("peerUptimeEstablishedEpoch"),
                "connectionsEstablished": p.get("connectionsEstablished"),
                "connectionsDropped": p.get("connectionsDropped"),
                "description": p.get("desc") or (n.description if n else None),
                "owner": "novanet" if n else "",
            })
        return rows

    def prefixes(self) -> list[dict[str, Any]]:
        routes = dict(self.vtysh.show_json("show ip bgp json").get("routes") or {})
        if 6 in self.ip_families:
            routes.update(self.vtysh.show_json("show bgp ipv6 unicast json").get("routes") or {})
        rows = []
        for prefix, paths in sorted(routes.items(), key=lambda kv: _ip_key(kv[0].split("/")[0])):
            for p in paths:
                local = p.get("peerId") in ("(unspec)", None) and not p.get("path")
                hops = [h.get("ip") for h in p.get("nexthops", [])]
                rows.append({"prefix": prefix, "direction": "advertised" if local else "learned",
                             "nextHop": "self" if local else ",".join(h for h in hops if h),
                             "asPath": p.get("path", ""), "best": bool(p.get("bestpath")), "valid": bool(p.get("valid")),
                             "peer": None if local else p.get("peerId")})
        return rows

    def _bfd_raw(self) -> list[dict[str, Any]]:
        if "bfdd" not in self.daemons:
            return []
        try:
            out = self.vtysh.show_json("show bfd peers json")
        except FrrUnavailable:
            return []
        return out if isinstance(out, list) else []

    def bfd_sessions(self) -> list[dict[str, Any]]:
        return [{"peer": b.get("peer"), "status": b.get("status"), "uptime": b.get("uptime"),
                 "downtime": b.get("downtime"), "local": b.get("local"), "interface": b.get("interface"),
                 "receiveInterval": b.get("receive-interval"), "transmitInterval": b.get("transmit-interval"),
                 "detectMultiplier": b.get("detect-multiplier"), "diagnostic": b.get("diagnostic")}
                for b in sorted(self._bfd_raw(), key=lambda b: _ip_key(str(b.get("peer"))))]


FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def _enable_forwarding(families: set[int]) -> None:
    """A pod's packet to another node leaves through the node's stack, which forwards a family only
    with its forwarding sysctl on (the kernel's default is off)."""
    for fam in sorted(families):
        path = Path("/proc/sys", FORWARDING[fam])
        try:
            if path.read_text().strip() != "1":
                path.write_text("1")
                log.info("%s set to 1: pods' traffic to other nodes is routed by the stack", FORWARDING[fam])
        except OSError as e:
            log.warning("cannot turn on %s (%s): pods' traffic to other nodes will be dropped", FORWARDING[fam], e)


def _next_hops(route: Any) -> list[tuple[str, int]]:
    """(gateway, oif) of a route message, one or many (RTA_MULTIPATH)."""
    gw, oif = route.get_attr("RTA_GATEWAY"), route.get_attr("RTA_OIF")
    if gw and oif:
        return [(gw, oif)]
    return [(h.get_attr("RTA_GATEWAY"), h.get("oif")) for h in route.get_attr("RTA_MULTIPATH") or []
            if h.get_attr("RTA_GATEWAY")]


def _summary_peers(summary: Any) -> dict[str, dict[str, Any]]:
    """``show bgp summary json``'s peers of both unicast families, by address (an IPv4 session
    carrying IPv6 too is listed under each; the IPv4 entry wins, its counters are the session's)."""
    if not isinstance(summary, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for af in ("ipv6Unicast", "ipv4Unicast"):
        out.update((summary.get(af) or {}).get("peers") or {})
    return out


def _ip_key(ip: str) -> tuple[int, ...]:
    """IPv4 before IPv6, each in numeric order; anything else last."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return (1 << 30,)
    return (a.version, int(a))

