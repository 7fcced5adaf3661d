"""Services + EndpointSlices -> this node's frontends, with every per-node semantic resolved.

A datapath backend gets final lists and needs no Kubernetes knowledge. What is resolved here,
following kube-proxy (``pkg/proxy/endpointslicecache.go``, ``pkg/proxy/topology.go``):

- a Service port's backends are the endpoints of the Service's slices (label
  ``kubernetes.io/service-name``) whose slice lists a port of the same name and protocol; the
  slice's port number is the target. A slice port without a number is resolved per backend pod:
  ``targetPort`` as a number, or the pod's container port of that name and protocol (what the
  EndpointSlice controller's FindPort does); an endpoint whose pod has no such port is left out.
- an endpoint's addresses are fungible (the API says so): the first one is used, as kube-proxy does.
- an address listed twice (two slices during a rollout) counts once, the ready copy winning.
- ``internalTrafficPolicy: Local``: the ClusterIP frontend lists only this node's backends.
- ``externalTrafficPolicy: Local``: the NodePort frontend lists only this node's backends and
  asks the datapath to keep the client's address; ``Cluster`` lists every backend.
- terminating endpoints stay listed with their flags (the datapath gives them no new
  connections, but connections already going to them finish).
- per IP family: each of a Service's ``clusterIPs`` gets the frontends of its family, with the
  endpoints of the slices of that ``addressType`` (kube-proxy runs one proxier per family); a
  NodePort frontend per family this node has an address of. IPv4 keys are as before; an IPv6
  frontend's key ends in ``/IPv6``.
- headless, ExternalName and not-yet-allocated ClusterIPs produce no frontend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from novanet_core.state.model import ClusterState, Pod
from novanet_core.state.services import EndpointSlice, Service, ServicePort, SliceEndpoint
from novanet_core.types import ServiceBackend, ServiceFrontend, frontend_key


def slices_of(state: ClusterState, svc: Service, family: str = "IPv4") -> list[EndpointSlice]:
    return sorted((s for s in state.endpointslices.values()
                   if s.namespace == svc.namespace and s.service_name == svc.name and s.address_type == family),
                  key=lambda s: s.name)


def _pod_of(state: ClusterState, ep: SliceEndpoint, namespace: str) -> Pod | None:
    ref = ep.target_ref
    if ref is None or (ref.kind and ref.kind != "Pod"):
        return None
    return state.pods.get(f"{ref.namespace or namespace}/{ref.name}")


def _target_port(state: ClusterState, sp: ServicePort, slice_port: int | None, ep: SliceEndpoint,
                 namespace: str) -> int | None:
    if slice_port is not None:
        return slice_port
    if isinstance(sp.target_port, int):
        return sp.target_port
    pod = _pod_of(state, ep, namespace)
    if pod is None:
        return None
    return next((cp.port for cp in pod.ports if cp.name == sp.target_port and cp.protocol == sp.protocol), None)


def backends_for(state: ClusterState, svc: Service, sp: ServicePort, node: str,
                 slices: Iterable[EndpointSlice] | None = None) -> list[ServiceBackend]:
    """Every backend of one Service port, ``local`` set for this node's."""
    found: dict[tuple[str, int], ServiceBackend] = {}
    for s in slices if slices is not None else slices_of(state, svc):
        port = next((p for p in s.ports if p.name == sp.name and p.protocol == sp.protocol), None)
        if port is None:
            continue
        for ep in s.endpoints:
            target = _target_port(state, sp, port.port, ep, svc.namespace)
            if target is None:
                continue
            node_name = ep.node_name
            if node_name is None:
                pod = _pod_of(state, ep, svc.namespace)
                node_name = pod.node if pod is not None else None
            # The addresses of one endpoint are fungible; like kube-proxy, use the first.
            for addr in ep.addresses[:1]:
                b = ServiceBackend(ip=addr, port=target, node_name=node_name or "", local=node_name == node,
                                   ready=ep.ready, serving=ep.serving, terminating=ep.terminating,
                                   protocol=sp.protocol)
                old = found.get((addr, target))
                if old is None or (b.ready and not old.ready):
                    found[(addr, target)] = b
    return [found[k] for k in sorted(found, key=lambda k: (ipaddress.ip_address(k[0]), k[1]))]


def _family(addr: str) -> str | None:
    """``IPv4`` / ``IPv6`` (an EndpointSlice's addressType), None for what is not an address."""
    try:
        return f"IPv{ipaddress.ip_address(addr).version}"
    except ValueError:
        return None


def proxied(svc: Service) -> bool:
    """Does this Service get frontends at all?"""
    return svc.type != "ExternalName" and not svc.headless and svc.cluster_ip is not None


def frontends_for(state: ClusterState, svc: Service, node: str, node_ips: str | Sequence[str],
                  slices: Iterable[EndpointSlice] | None = None) -> list[ServiceFrontend]:
    """The frontends one Service has on this node (ClusterIP per port and family, NodePort where
    it has one, on this node's address of each of the Service's families).

    ``node_ips``: this node's addresses (one per family; a single address is its only family).
    ``slices``: the Service's slices when the caller keeps them indexed (else the state is scanned).
    """
    if not proxied(svc):
        return []
    all_slices = list(slices) if slices is not None else [
        s for s in state.endpointslices.values() if s.namespace == svc.namespace and s.service_name == svc.name]
    by_family: dict[str, str] = {}  # family -> the ClusterIP of that family (the first one)
    for ip in svc.cluster_ips or (svc.cluster_ip,):
        fam = _family(ip) if ip else None
        if fam is not None:
            by_family.setdefault(fam, ip)
    nodes = {f: ip for ip in ([node_ips] if isinstance(node_ips, str) else node_ips)
             if (f := _family(ip)) is not None}
    out: list[ServiceFrontend] = []
    for fam, cip in by_family.items():
        fslices = sorted((s for s in all_slices if s.address_type == fam), key=lambda s: s.name)
        suffix = "" if fam == "IPv4" else "/IPv6"
        for sp in svc.ports:
            every = backends_for(state, svc, sp, node, fslices)
            local = [b for b in every if b.local]
            common = dict(namespace=svc.namespace, name=svc.name, port_name=sp.name, protocol=sp.protocol,
                          affinity_timeout=svc.affinity_timeout if svc.session_affinity == "ClientIP" else 0)
            out.append(ServiceFrontend(
                key=frontend_key(svc.namespace, svc.name, sp.name, sp.port, sp.protocol, False) + suffix, ip=cip,
                port=sp.port, kind="ClusterIP",
                backends=list(local if svc.internal_traffic_policy == "Local" else every), **common))
            node_ip = nodes.get(fam)
            if sp.node_port is not None and svc.has_node_ports and node_ip:
                etp_local = svc.external_traffic_policy == "Local"
                out.append(ServiceFrontend(
                    key=frontend_key(svc.namespace, svc.name, sp.name, sp.port, sp.protocol, True) + suffix,
                    ip=node_ip, port=sp.node_port, kind="NodePort", backends=list(local if etp_local else every),
                    external_local=etp_local, **common))
    return out


def compat_backends(state: ClusterState, node: str,
                    slices_by_service: Mapping[str, Iterable[EndpointSlice]] | None = None) -> list[ServiceBackend]:
    """kube-proxy compatibility: every backend kube-proxy may DNAT to, on any node, once each, of
    both families (each family's proxier DNATs to its family's slices)."""
    seen: dict[tuple[str, int, str], ServiceBackend] = {}
    for svc in state.services.values():
        if not proxied(svc):
            continue
        for family in ("IPv4", "IPv6"):
            slices = slices_of(state, svc, family) if slices_by_service is None else sorted(
                (s for s in slices_by_service.get(svc.key, ()) if s.address_type == family), key=lambda s: s.name)
            for sp in svc.ports:
                for b in backends_for(state, svc, sp, node, slices):
                    seen.setdefault((b.ip, b.port, b.protocol), b)
    return [seen[k] for k in sorted(seen, key=lambda k: (ipaddress.ip_address(k[0]).version,
                                                         ipaddress.ip_address(k[0]), k[1], k[2]))]
