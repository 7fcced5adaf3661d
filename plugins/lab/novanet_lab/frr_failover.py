"""Failover measurements in native-routing labs: how long other nodes keep a dead node's PodCIDR.

A node's underlay link is taken down at the bridge (``u-<index>`` in ``<lab>.underlay``, as a
failed switch port or cable), and each observer node's routing table is watched for the moment
the ``proto bgp`` route to that node's PodCIDR leaves it. With BFD the sessions drop after
detect-multiplier × interval; without it, after the BGP hold time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from novanet_core.protocols import RTPROT_BGP
from novanet_lab import state as lab_state
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths

POLL = 0.005  # 5 ms: the resolution of the figures


@dataclass
class FailoverResult:
    node: str
    pod_cidr: str
    seconds: dict[str, float | None] = field(default_factory=dict)  # observer -> route gone after (None: still there)
    restored: dict[str, float | None] = field(default_factory=dict)  # observer -> route back after link up


def _has_route(ipr: IPRoute, net: str, plen: int) -> bool:
    for r in ipr.get_routes(family=2):
        if r.get_attr("RTA_DST") == net and r.get("dst_len") == plen and r.get("proto") == RTPROT_BGP:
            return True
    return False


def _port_index(paths: LabPaths, node: str) -> int:
    st = lab_state.load(paths)
    if st is None or node not in st.nodes:
        raise LabError(f"lab {paths.lab} has no node {node}")
    return list(st.nodes).index(node)


def set_underlay_link(lab: str, node: str, up: bool) -> None:
    paths = LabPaths(lab)
    port = f"u-{_port_index(paths, node)}"
    with IPRoute(netns=paths.underlay_netns) as ipr:
        idx = ipr.link_lookup(ifname=port)
        if not idx:
            raise LabError(f"underlay port {port} of node {node} not found")
        ipr.link("set", index=idx[0], state="up" if up else "down")


def wait_route(lab: str, observer: str, pod_cidr: str, present: bool, timeout: float) -> float | None:
    """Seconds until the bgp route to ``pod_cidr`` on ``observer`` is ``present`` (None at timeout)."""
    paths = LabPaths(lab)
    net, plen = pod_cidr.split("/")
    t0 = time.monotonic()
    with IPRoute(netns=paths.node_netns(observer)) as ipr:
        while time.monotonic() - t0 < timeout:
            if _has_route(ipr, net, int(plen)) == present:
                return time.monotonic() - t0
            time.sleep(POLL)
    return None


def measure(lab: str, node: str, observers: list[str], timeout: float = 30.0, restore: bool = True) -> FailoverResult:
    """Take ``node``'s underlay link down; time the route withdrawal on every observer; restore."""
    paths = LabPaths(lab)
    st = lab_state.load(paths)
    if st is None:
        raise LabError(f"lab {lab} is not up")
    cidr = st.nodes[node].podCIDR
    res = FailoverResult(node=node, pod_cidr=cidr)
    for o in observers:
        if wait_route(lab, o, cidr, True, 1.0) is None:
            raise LabError(f"node {o} has no bgp route to {cidr} before the failure")
    threads = []
    t_down = [0.0]

    def watch(o: str) -> None:
        gone = wait_route(lab, o, cidr, False, timeout)
        res.seconds[o] = None if gone is None else gone - (t_down[0] - started)

    started = time.monotonic()
    for o in observers:
        threads.append(threading.Thread(target=watch, args=(o,), daemon=True))
        threads[-1].start()
    t_down[0] = time.monotonic()
    set_underlay_link(lab, node, up=False)
    for t in threads:
        t.join(timeout + 1)
    if restore:
        set_underlay_link(lab, node, up=True)
        for o in observers:
            res.restored[o] = wait_route(lab, o, cidr, True, timeout)
    return res
