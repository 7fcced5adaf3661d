"""Native-routing labs: per-node routing settings, and ToR routers (spec ``routers:``).

A router is a netns ``<lab>.router.<name>`` cabled to the underlay bridge like a node, running
FRR (:mod:`novanet_lab.frr`) with a static config: eBGP to every node listed in its
``peers`` (``remote-as external``: the node's ASN is the agent's business), optional BFD with the
cluster's intervals, and it forwards. Nodes that peer with a router get it as an explicit peer
in their ``routing.settings.peers``; with ``routing.settings.fullMesh: false`` they learn each
other's PodCIDRs only through it, which is the leaf/spine shape the original ran in.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from novanet_core import ipfamily
from novanet_lab import frr, netns
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.spec import LabSpec

ROUTER_PORT_BASE = 200  # underlay bridge ports u-<n>: nodes use 0.., routers 200..


def router_netns(paths: LabPaths, name: str) -> str:
    return f"{paths.lab}.router.{name}"


def routing_settings(spec: LabSpec) -> dict[str, Any]:
    routing = (spec.cluster.model_extra or {}).get("routing") or {}
    return dict(routing.get("settings") or {}) if isinstance(routing, dict) else {}


def underlay_v4(spec: LabSpec) -> str:
    """The underlay's IPv4 range: routers and their BGP sessions use IPv4 in this release."""
    cidr = ipfamily.pick(spec.underlay.cidrs, 4)
    if cidr is None:
        raise LabError(f"routers: need an IPv4 range in underlay.cidr ({spec.underlay.cidr}): the lab's routers "
                       "speak BGP over IPv4")
    return cidr


def router_ips(spec: LabSpec, node_ips: dict[str, str], gateway: str) -> dict[str, str]:
    """Routers with ``ip:`` keep it; the others get the highest free host addresses of the underlay."""
    if not spec.routers:
        return {}
    net = ipaddress.IPv4Network(underlay_v4(spec))
    used = {gateway, *node_ips.values(), *(r.ip for r in spec.routers if r.ip)}
    out = {}
    free = (str(a) for a in reversed(list(net.hosts())) if str(a) not in used)
    for r in spec.routers:
        if r.ip and (r.ip == gateway or r.ip in node_ips.values()):
            raise LabError(f"routers ({r.name}).ip: {r.ip} is already used by the underlay bridge or a node")
        ip = r.ip or next(free, None)
        if ip is None:
            raise LabError(f"routers ({r.name}).ip: no free address left in underlay.cidr {spec.underlay.cidr}")
        out[r.name] = ip
    return out


def node_config(spec: LabSpec, paths: LabPaths, node: str, cfg: dict[str, Any], rips: dict[str, str]) -> dict[str, Any]:
    """The node's config with the lab's routing settings: FRR pathspace and its router peers."""
    cfg = copy.deepcopy(cfg)
    routing = cfg.setdefault("routing", {})
    settings = routing.setdefault("settings", {})
    settings["pathspace"] = frr.pathspace(paths, node)
    peers = list(settings.get("peers") or []) + router_peers(spec, node, rips)
    if peers:
        settings["peers"] = peers
    return cfg


def router_peers(spec: LabSpec, node: str, rips: dict[str, str]) -> list[dict[str, Any]]:
    """The routing.settings.peers entries for the routers ``node`` peers with."""
    return [{"address": rips[r.name], "asn": r.asn, "description": f"lab router {r.name}",
             **({"password": r.password} if r.password else {})}
            for r in spec.routers if node in (r.peers if r.peers is not None else [n.name for n in spec.nodes])]


def router_bgp_config(spec: LabSpec, name: str, ip: str, node_ips: dict[str, str]) -> tuple[str, str]:
    """(bgpd.conf, bfdd.conf) extra text for router ``name``."""
    r = next(x for x in spec.routers if x.name == name)
    bfd = routing_settings(spec).get("bfd") or {}
    use_bfd = bool(bfd.get("enabled"))
    peers = r.peers if r.peers is not None else [n.name for n in spec.nodes]
    lines = [f"router bgp {r.asn}", f" bgp router-id {ip}", " no bgp ebgp-requires-policy"]
    for n in peers:
        lines.append(f" neighbor {node_ips[n]} remote-as external")
        lines.append(f" neighbor {node_ips[n]} description lab node {n}")
        if r.password:
            lines.append(f" neighbor {node_ips[n]} password {r.password}")
        if use_bfd:
            lines.append(f" neighbor {node_ips[n]} bfd profile novanet")
    lines.append("exit")
    bfdd = ""
    if use_bfd:
        bfdd = (f"bfd\n profile novanet\n  receive-interval {bfd.get('receiveInterval', 300)}\n"
                f"  transmit-interval {bfd.get('transmitInterval', 300)}\n"
                f"  detect-multiplier {bfd.get('detectMultiplier', 3)}\n exit\nexit\n")
    return "\n".join(lines) + "\n", bfdd


def build(spec: LabSpec, paths: LabPaths, node_ips: dict[str, str], rips: dict[str, str], plen: int,
          progress: Any) -> None:
    for j, r in enumerate(spec.routers):
        ns = router_netns(paths, r.name)
        progress(f"router {r.name}: netns {ns}, {rips[r.name]}, AS {r.asn}")
        netns.create(ns)
        netns.attach_node(paths.underlay_netns, ROUTER_PORT_BASE + j, ns, [(rips[r.name], plen)], spec.underlay.mtu)
        netns.set_sysctl(ns, "net.ipv4.ip_forward", "1")
        netns.set_sysctl(ns, "net.ipv4.conf.all.rp_filter", "0")
        bgpd, bfdd = router_bgp_config(spec, r.name, rips[r.name], node_ips)
        frr.start(paths, r.name, ns, {"bgpd": bgpd, "bfdd": bfdd})
