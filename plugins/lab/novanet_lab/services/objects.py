"""Service objects in the lab, and the API server's allocation of ClusterIPs and NodePorts.

No API server runs in the lab, so what it does on create is done here:

- validation with the agents' own parser (``novanet_core.state.services.parse_service``), so the
  lab refuses exactly what the agents would, plus the checks that need the other Services: a
  ClusterIP inside ``serviceCIDR`` and not in use, a nodePort not in use, ClusterIP immutable;
- ``ipFamilies`` and ``ipFamilyPolicy`` are filled in as the API server does
  (``novanet_core.state.services.resolve_ip_families``) from ``serviceCIDR``'s ranges (one per
  family); a Service gets one ClusterIP per family it has and did not name, from that
  family's range; a NodePort/LoadBalancer port without ``nodePort`` gets one from 30000-32767.

Both ranges are split the way the API server splits them (KEP-3070 for ClusterIPs, KEP-3668
for NodePorts): a low "static" band for addresses users pick (``kube-dns`` at 10.96.0.10), and
automatic allocation from the band above it first. The API server picks at random within the
band; the lab takes the lowest free value, so a lab's addresses are the same on every run. The
first address of the range is kept free, as the API server keeps it for ``default/kubernetes``.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from novanet_core import ipfamily
from novanet_core.state.model import ObjectError
from novanet_core.state.services import (
    CLUSTER_IP_NONE,
    NODE_PORT_RANGE,
    Service,
    parse_service,
    resolve_ip_families,
)
from novanet_lab.errors import LabError


def static_band(size: int, divisor: int, cap: int) -> int:
    """How many low values are kept for users to pick (KEP-3070/KEP-3668: min(max(16, size/divisor), cap))."""
    return min(max(16, size // divisor), cap)


class Allocator:
    """ClusterIPs and NodePorts in use in one lab, and the next free ones."""

    def __init__(self, service_cidr: str, services: Iterable[Mapping[str, Any]]):
        self.nets = ipfamily.parse_cidrs(service_cidr)  # primary family first
        self.families = tuple(n.version for n in self.nets)
        self.ips: dict[str, str] = {}  # ClusterIP -> Service key
        self.node_ports: dict[tuple[int, str], str] = {}  # (nodePort, protocol) -> Service key
        for obj in services:
            self.take(obj)

    def take(self, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        spec = obj.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip != CLUSTER_IP_NONE:
                self.ips[str(ipaddress.ip_address(ip))] = key
        for p in spec.get("ports") or []:
            if p.get("nodePort"):
                self.node_ports[(int(p["nodePort"]), p.get("protocol") or "TCP")] = key

    def release(self, key: str) -> None:
        self.ips = {ip: k for ip, k in self.ips.items() if k != key}
        self.node_ports = {np: k for np, k in self.node_ports.items() if k != key}

    def net(self, version: int) -> ipfamily.Network | None:
        return next((n for n in self.nets if n.version == version), None)

    def next_ip(self, version: int) -> str:
        net = self.net(version)
        assert net is not None  # resolve_ip_families only yields families of serviceCIDR
        # An IPv6 range has no broadcast address, but the API server skips its last one all the same.
        first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
        hosts = last - first + 1
        dynamic = first + static_band(hosts, 16, 256)
        addr = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        for n in itertools.chain(range(dynamic, last + 1), range(first + 1, dynamic)):  # first: default/kubernetes
            ip = str(addr(n))
            if ip not in self.ips:
                return ip
        raise LabError(f"serviceCIDR {net}: no free ClusterIP left")

    def next_node_port(self, protocol: str) -> int:
        lo, hi = NODE_PORT_RANGE
        dynamic = lo + static_band(hi - lo + 1, 32, 128)
        for n in [*range(dynamic, hi + 1), *range(lo, dynamic)]:
            if (n, protocol) not in self.node_ports:
                return n
        raise LabError(f"node port range {lo}-{hi}: no free {protocol} port left")


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def parse(obj: Mapping[str, Any]) -> Service:
    return parse_service(obj)


def admit(obj: Mapping[str, Any], old: Mapping[str, Any] | None, alloc: Allocator) -> dict[str, Any]:
    """The Service as the API server would store it: checked against the others, allocated.

    Raises ObjectError naming the field (``spec.clusterIP``, ``spec.ports[1].nodePort``).
    ``old`` is the stored version when this is an update; ``alloc`` is updated.
    """
    svc = parse(obj)
    out = copy.deepcopy(dict(obj))
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Service")
    out.setdefault("metadata", {})["namespace"] = svc.namespace
    spec = out.setdefault("spec", {})
    key = svc.key
    old_spec = (old or {}).get("spec") or {}
    saved = dict(alloc.ips), dict(alloc.node_ports)
    alloc.release(key)
    try:
        if svc.type != "ExternalName":
            _admit_cluster_ip(svc, spec, old_spec, alloc)
        _admit_node_ports(svc, spec, old_spec, alloc)
        parse(out)  # what was filled in must parse too
    except (ObjectError, LabError):
        alloc.ips, alloc.node_ports = saved  # a refused change leaves the allocations as they were
        raise
    alloc.take(out)
    return out


def _admit_cluster_ip(svc: Service, spec: dict[str, Any], old_spec: Mapping[str, Any], alloc: Allocator) -> None:
    kind, name = "Service", svc.name
    old_ips = list(old_spec.get("clusterIPs") or ([old_spec["clusterIP"]] if old_spec.get("clusterIP") else []))
    if svc.cluster_ip is None and old_ips:
        # an update that leaves clusterIP out keeps them (kubectl apply merges the same way)
        svc = dataclasses.replace(svc, cluster_ip=old_ips[0], cluster_ips=tuple(old_ips))
        if svc.ip_family_policy is None and old_spec.get("ipFamilyPolicy"):
            svc = dataclasses.replace(svc, ip_family_policy=old_spec["ipFamilyPolicy"])
    if old_ips and svc.cluster_ip != old_ips[0]:
        raise ObjectError(kind, name, "spec.clusterIP", f"field is immutable (is {old_ips[0]!r})")
    families, policy = resolve_ip_families(svc, alloc.families)
    spec["ipFamilies"], spec["ipFamilyPolicy"] = list(families), policy
    if svc.headless:
        spec["clusterIP"], spec["clusterIPs"] = CLUSTER_IP_NONE, [CLUSTER_IP_NONE]
        return
    ips = []
    for i, fam in enumerate(families):
        version = 4 if fam == "IPv4" else 6
        path = "spec.clusterIP" if i == 0 else f"spec.clusterIPs[{i}]"
        ip = svc.cluster_ips[i] if i < len(svc.cluster_ips) else None
        if ip is None:
            # a secondary family added by an update keeps the address it had before
            ip = ipfamily.pick(old_ips, version) or alloc.next_ip(version)
        elif ipaddress.ip_address(ip) not in alloc.net(version):  # type: ignore[operator]
            raise ObjectError(kind, name, path, f"{ip} is not in serviceCIDR {alloc.net(version)}")
        elif ip in alloc.ips:
            raise ObjectError(kind, name, path, f"{ip} is already allocated to Service {alloc.ips[ip]}")
        alloc.ips[ip] = svc.key  # taken before the next family's pick
        ips.append(ip)
    spec["clusterIP"], spec["clusterIPs"] = ips[0], ips


def _admit_node_ports(svc: Service, spec: dict[str, Any], old_spec: Mapping[str, Any], alloc: Allocator) -> None:
    if not svc.has_node_ports:
        return
    old = {(p.get("name") or "", p.get("protocol") or "TCP"): p.get("nodePort")
           for p in old_spec.get("ports") or [] if p.get("nodePort")}
    for i, (raw, sp) in enumerate(zip(spec.get("ports") or [], svc.ports, strict=True)):
        np = sp.node_port or old.get((sp.name, sp.protocol))
        if np is None:
            np = alloc.next_node_port(sp.protocol)
        elif (np, sp.protocol) in alloc.node_ports:
            raise ObjectError("Service", svc.name, f"spec.ports[{i}].nodePort",
                              f"{np}/{sp.protocol} is already allocated to Service {alloc.node_ports[(np, sp.protocol)]}")
        raw["nodePort"] = np
        alloc.node_ports[(np, sp.protocol)] = svc.key
