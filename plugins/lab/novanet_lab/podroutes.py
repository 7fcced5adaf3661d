"""Native-routing labs: which routing backend the nodes run, and waiting for its routes.

The lab runs FRR on every node only for a routing backend that drives one (:data:`FRR_BACKENDS`);
any other routing backend (a third-party one, say) gets the nodes and the underlay and nothing
else, and ``lab up`` waits until it has routed every PodCIDR (:func:`wait_routed`).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from novanet_lab.errors import LabError

if TYPE_CHECKING:
    from novanet_lab.spec import LabSpec

# Routing backends that configure an FRR on the node: the lab starts one per node for them and
# hands them its pathspace (novanet_lab.routers). ``routing.type``'s default is the first.
FRR_BACKENDS = ("frr-bgp",)


def routing_type(spec: LabSpec) -> str:
    routing = (spec.cluster.model_extra or {}).get("routing") or {}
    return str(routing.get("type") or FRR_BACKENDS[0]) if isinstance(routing, dict) else FRR_BACKENDS[0]


def uses_frr(spec: LabSpec) -> bool:
    """Native routing through FRR: the lab runs it on every node (and may add routers)."""
    return spec.cluster.routingMode == "native" and routing_type(spec) in FRR_BACKENDS


def kernel_routes(netns_name: str, proto: int | None = None, families: Iterable[int] = (4,)) -> set[str]:
    """The prefixes of those IP families in a netns's main table (of route protocol ``proto`` when
    given), in ipaddress's canonical form."""
    from pyroute2 import IPRoute

    out: set[str] = set()
    with IPRoute(netns=netns_name) as ipr:
        for fam in families:
            for r in ipr.get_routes(family=socket.AF_INET if fam == 4 else socket.AF_INET6):
                dst = r.get_attr("RTA_DST")
                if dst and (proto is None or r.get("proto") == proto):
                    out.add(str(ipaddress.ip_network(f"{dst}/{r.get('dst_len')}", strict=False)))
    return out


def wait_routed(nodes: dict[str, tuple[str, list[str]]], timeout: float, proto: int | None = None,
                what: str = "routes", hint: str = "the agents' `novanetctl status`") -> None:
    """Wait until every node has a route (of ``proto``, when given) to every other node's PodCIDR.

    ``nodes`` maps node name to (netns, its PodCIDRs: one per family). ``lab up`` returns only
    then, so that what runs next (probes, conformance suites) does not race the routing backend.
    """
    deadline = time.monotonic() + timeout
    families = {ipaddress.ip_network(c).version for _, cidrs in nodes.values() for c in cidrs}
    while True:
        missing = {}
        for name, (ns, _) in nodes.items():
            want = {str(ipaddress.ip_network(c)) for other, (_, cidrs) in nodes.items() if other != name for c in cidrs}
            lack = want - kernel_routes(ns, proto, families)
            if lack:
                missing[name] = lack
        if not missing:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{n} lacks {', '.join(sorted(c))}" for n, c in missing.items())
            raise LabError(f"{what} did not converge within {timeout:.0f} s: {detail} (check {hint})")
        time.sleep(0.1)
