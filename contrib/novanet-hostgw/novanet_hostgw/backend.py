"""The ``hostgw`` routing backend (``routingMode: native``, ``routing.type: hostgw``), after
flannel's host-gw: every remote node's PodCIDR is routed via that node's own underlay address,
out of the underlay interface. Nothing is added to a packet and no routing daemon runs; the
price is that every node must be on the underlay's L2 segment. A node reached through a gateway
cannot be a next hop, so it is reported (``status()["unreachable"]``) instead of routed.

The routes are the core's routes over the underlay (:mod:`novanet_core.bpf.tunnel.routes`,
``proto novanet``) with the underlay's MTU; the underlay itself comes from the context.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.backends import BackendContext, ConfigError
from novanet_core.bpf.tunnel import routes
from novanet_core.config.models import NovaNetConfig
from novanet_core.protocols import RTPROT_NOVANET
from novanet_core.types import NodeInfo, Underlay

log = logging.getLogger("novanet.routing.hostgw")

NAME = "hostgw"


def config_errors(cfg: NovaNetConfig) -> list[str]:
    if cfg.routingMode == "overlay" and cfg.tunnelProtocol == NAME:
        return [f"tunnelProtocol: {NAME!r} is a routing backend, not a tunnel: set routingMode: native "
                f"and routing.type: {NAME}"]
    if cfg.routingMode != "native" or cfg.routing.type != NAME:
        return []
    return [f"routing.settings.{k}: unknown setting ({NAME} takes none)" for k in cfg.routing.settings]


def off_segment(ipr: IPRoute, ip: str, underlay: Underlay) -> str:
    """Why ``ip`` cannot be a next hop out of the underlay ('' when it can)."""
    try:
        r = ipr.route("get", dst=ip)[0]
    except NetlinkError as e:
        return f"no route to {ip}: {e}"
    if gw := r.get_attr("RTA_GATEWAY"):
        return f"{ip} is reached via gateway {gw}: {NAME} needs every node on the underlay's L2 segment"
    if r.get_attr("RTA_OIF") != underlay.ifindex:
        return f"{ip} is not reached out of the underlay interface {underlay.name}"
    return ""


class HostGwRouting:
    name = NAME
    ip_families = (4,)  # the core's underlay routes are IPv4

    def __init__(self, ctx: BackendContext):
        if errors := config_errors(ctx.config):
            raise ConfigError("; ".join(errors))
        self.ctx = ctx
        self.underlay: Underlay | None = None
        self.want: dict[str, tuple[str, str]] = {}  # PodCIDR -> (node, next hop = its address)
        self.unreachable: dict[str, str] = {}  # node -> why it has no route
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ RoutingBackend
    def start(self, local: NodeInfo) -> None:
        self.underlay = self.ctx.require_underlay()
        log.info("%s: routing remote PodCIDRs out of %s (MTU %d)", NAME, self.underlay.name, self.underlay.mtu)

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        u = self.underlay or self.ctx.require_underlay()
        with self._lock, IPRoute() as ipr:
            want, unreachable = {}, {}
            for n in remotes:
                if why := off_segment(ipr, n.ip, u):
                    unreachable[n.name] = why
                else:
                    want[n.pod_cidr] = (n.name, n.ip)
            routes.sync_underlay_routes(ipr, u.ifindex, u.mtu, {c: ip for c, (_, ip) in want.items()}, NAME)
            self.want, self.unreachable = want, unreachable
        for node, why in sorted(unreachable.items()):
            log.error("%s: node %s not routed: %s", NAME, node, why)

    def stop(self, withdraw: bool) -> None:
        """Routes stay across an agent restart (traffic keeps flowing); ``withdraw`` removes them."""
        if withdraw and self.underlay is not None:
            with self._lock, IPRoute() as ipr:
                routes.sync_underlay_routes(ipr, self.underlay.ifindex, self.underlay.mtu, {}, NAME)
                self.want = {}

    def status(self) -> dict[str, Any]:
        """The routes as the kernel holds them, against the ones wanted."""
        with IPRoute() as ipr:
            have = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}": r.get_attr("RTA_GATEWAY")
                    for r in ipr.get_routes(family=2, proto=RTPROT_NOVANET) if r["dst_len"] < 32}
        rows = [{"node": node, "podCIDR": cidr, "via": ip, "installed": have.get(cidr) == ip}
                for cidr, (node, ip) in sorted(self.want.items())]
        return {"connected": self.underlay is not None and not self.unreachable and all(r["installed"] for r in rows),
                "underlay": self.underlay.name if self.underlay else None,
                "mtu": self.underlay.mtu if self.underlay else None, "routes": rows,
                "unreachable": [{"node": n, "reason": why} for n, why in sorted(self.unreachable.items())]}
