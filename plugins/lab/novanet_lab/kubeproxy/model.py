"""kube-proxy's view of Services and EndpointSlices, for the rule writers in this package.

Written from kube-proxy's source (``pkg/proxy/serviceport.go``, ``pkg/proxy/endpointslicecache.go``,
``pkg/proxy/topology.go`` ``CategorizeEndpoints``) and kept apart from NovaNet's own resolution
(``novanet_core.services``) on purpose: the emulated kube-proxy must not inherit NovaNet's bugs.

- kube-proxy runs one proxier per IP family (``pkg/proxy/metaproxier``; each family's
  ``ServiceChangeTracker`` and ``EndpointsChangeTracker`` keep only their family): a service port
  exists, in a family, for every port of a Service that has a ClusterIP of that family among its
  ``clusterIPs`` (not headless, not ExternalName); its name is ``ns/name:portName`` (``ns/name``
  for an unnamed port), the same in both families;
- its endpoints come from the Service's slices of that family's ``addressType`` (label
  ``kubernetes.io/service-name``), from the slice port of the same name and protocol that has a
  number; one per ``ip:port`` (the first address of an endpoint; ``[ip]:port`` for IPv6, as
  ``net.JoinHostPort`` writes it), local when ``nodeName`` is this node;
- ``CategorizeEndpoints``: Cluster-policy endpoints are the ready ones, or when none is ready
  the serving-and-terminating ones; Local-policy endpoints the same among this node's. Topology
  hints are not emulated (the lab has no zones).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from novanet_core.state.model import ClusterState
from novanet_core.state.services import Service, ServicePort


@dataclass(frozen=True)
class KPEndpoint:
    ip: str
    port: int
    local: bool
    ready: bool
    serving: bool
    terminating: bool

    def __str__(self) -> str:
        # BaseEndpointInfo.String(): net.JoinHostPort, so an IPv6 address is bracketed
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass
class KPServicePort:
    name: str  # "ns/svc:port" (ServicePortName.String())
    protocol: str  # lower case, as kube-proxy writes it
    cluster_ip: str
    port: int
    node_port: int
    affinity_seconds: int  # 0: no ClientIP affinity
    internal_local: bool
    external_local: bool
    endpoints: list[KPEndpoint] = field(default_factory=list)

    @property
    def family(self) -> int:
        return 6 if ":" in self.cluster_ip else 4

    @property
    def externally_accessible(self) -> bool:
        return self.node_port != 0

    @property
    def uses_cluster_endpoints(self) -> bool:
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or (self.external_local and self.externally_accessible)


@dataclass
class Categorized:
    cluster: list[KPEndpoint]
    local: list[KPEndpoint]
    reachable: list[KPEndpoint]  # every endpoint this node may send to (one chain each)
    has_any: bool


def port_name(svc: Service, sp: ServicePort) -> str:
    return f"{svc.namespace}/{svc.name}" + (f":{sp.name}" if sp.name else "")


def cluster_ip_of(svc: Service, family: int) -> str | None:
    """The Service's ClusterIP of ``family`` (from ``clusterIPs``, or ``clusterIP`` alone), if any."""
    for ip in svc.cluster_ips or ((svc.cluster_ip,) if svc.cluster_ip else ()):
        try:
            if ipaddress.ip_address(ip).version == family:
                return ip
        except ValueError:
            continue
    return None


def service_ports(state: ClusterState, node: str, family: int = 4) -> list[KPServicePort]:
    """The service ports of ``family``'s proxier on ``node``."""
    out = []
    address_type = f"IPv{family}"
    for svc in sorted(state.services.values(), key=lambda s: s.key):
        cluster_ip = None if svc.type == "ExternalName" or svc.headless else cluster_ip_of(svc, family)
        if cluster_ip is None:
            continue
        slices = [s for s in state.endpointslices.values()
                  if s.namespace == svc.namespace and s.service_name == svc.name and s.address_type == address_type]
        for sp in svc.ports:
            eps: dict[str, KPEndpoint] = {}
            for s in slices:
                port = next((p for p in s.ports if p.name == sp.name and p.protocol == sp.protocol and p.port), None)
                if port is None or port.port is None:
                    continue
                for e in s.endpoints:
                    ep = KPEndpoint(e.addresses[0], port.port, e.node_name == node, e.ready, e.serving, e.terminating)
                    eps.setdefault(str(ep), ep)
            out.append(KPServicePort(
                name=port_name(svc, sp), protocol=sp.protocol.lower(), cluster_ip=cluster_ip, port=sp.port,
                node_port=sp.node_port or 0 if svc.has_node_ports else 0,
                affinity_seconds=svc.affinity_timeout if svc.session_affinity == "ClientIP" else 0,
                internal_local=svc.internal_traffic_policy == "Local",
                external_local=svc.has_node_ports and svc.external_traffic_policy == "Local",
                endpoints=[eps[k] for k in sorted(eps, key=lambda k: (ipaddress.ip_address(eps[k].ip), eps[k].port))]))
    return out


def categorize(sp: KPServicePort) -> Categorized:
    eps = sp.endpoints
    cluster: list[KPEndpoint] = []
    has_any = False
    if sp.uses_cluster_endpoints:
        cluster = [e for e in eps if e.ready] or [e for e in eps if e.serving and e.terminating]
        has_any = bool(cluster)
    if not sp.uses_local_endpoints:
        return Categorized(cluster, [], cluster, has_any)
    local_ready = [e for e in eps if e.local and e.ready]
    local = local_ready or [e for e in eps if e.local and e.serving and e.terminating]
    has_any = has_any or any(e.ready or (e.serving and e.terminating) for e in eps)
    if not sp.uses_cluster_endpoints:
        return Categorized([], local, local, has_any)
    reachable = {str(e): e for e in cluster}
    reachable.update({str(e): e for e in local})
    return Categorized(cluster, local, list(reachable.values()), has_any)


@dataclass
class Plan:
    """What kube-proxy's syncProxyRules decides for one service port, before writing any rule."""

    cat: Categorized
    uses_cluster: bool  # the Cluster-policy chain exists (KUBE-SVC / service-)
    uses_local: bool  # the Local-policy chain exists (KUBE-SVL / local-)
    internal_local: bool  # ClusterIP traffic goes to the Local chain
    has_internal: bool  # ClusterIP traffic is translated at all
    external_local: bool  # NodePort traffic ends in the Local chain
    has_external: bool
    uses_external_chain: bool  # the KUBE-EXT / external- chain exists
    internal_verdict: str  # when not has_internal: "reject" (no endpoints at all) or "drop" (none local)
    external_verdict: str


def plan(sp: KPServicePort) -> Plan:
    cat = categorize(sp)
    has_internal = cat.has_any and (not sp.internal_local or bool(cat.local))
    has_external = cat.has_any and (not sp.external_local or bool(cat.local))
    return Plan(cat=cat, uses_cluster=bool(cat.cluster) and sp.uses_cluster_endpoints,
                uses_local=bool(cat.local) and sp.uses_local_endpoints, internal_local=sp.internal_local,
                has_internal=has_internal, external_local=sp.external_local, has_external=has_external,
                uses_external_chain=cat.has_any and sp.externally_accessible,
                internal_verdict="" if has_internal else ("drop" if cat.has_any else "reject"),
                external_verdict="" if has_external else ("drop" if cat.has_any else "reject"))
