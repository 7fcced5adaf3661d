"""Service (v1) and EndpointSlice (discovery.k8s.io/v1), parsed and validated like the API server would.

Only what a service proxy reads is kept. The checks are the API server's that matter to a
proxy (``pkg/apis/core/validation`` ValidateService, ``pkg/apis/discovery/validation``): a port
list with unique names and (port, protocol) pairs, a name on every port when there are several,
``nodePort`` only on NodePort/LoadBalancer Services and inside 30000-32767, a headless Service
never of type NodePort, ``externalTrafficPolicy`` only where there is external traffic,
addresses of the slice's ``addressType``. Defaults are the API server's too: ``targetPort`` =
``port``, ``protocol`` TCP, ``sessionAffinityConfig.clientIP.timeoutSeconds`` 10800, both
traffic policies ``Cluster``, and an endpoint's nil conditions read as the API documents them
(``ready`` nil = true, ``serving`` nil = ``ready``, ``terminating`` nil = false).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from novanet_core import ipfamily
from novanet_core.state import fields as f
from novanet_core.state.fields import DNS_LABEL_RE, IANA_SVC_NAME_RE, ObjectError
from novanet_core.types import SERVICE_PROTOCOLS

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
AFFINITIES = ("None", "ClientIP")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# The API server's default --service-node-port-range.
NODE_PORT_RANGE = (30000, 32767)
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
CLUSTER_IP_NONE = "None"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# discovery/v1 limits.
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100
MAX_ENDPOINT_ADDRESSES = 100


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: int | str = 0  # a number, or the name of a container port of each backend pod
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"
    # None: no selector (the EndpointSlices are managed by someone else).
    selector: Mapping[str, str] | None = None
    # None: not allocated yet (the lab allocates); "None": headless.
    cluster_ip: str | None = None
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    session_affinity: str = "None"
    affinity_timeout: int = 0  # seconds, with sessionAffinity ClientIP
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None
    publish_not_ready_addresses: bool = False
    external_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip == CLUSTER_IP_NONE

    @property
    def has_node_ports(self) -> bool:
        return self.type in ("NodePort", "LoadBalancer")


@dataclass(frozen=True)
class TargetRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    target_ref: TargetRef | None = None
    hostname: str | None = None
    zone: str | None = None


@dataclass(frozen=True)
class SlicePort:
    name: str = ""
    protocol: str = "TCP"
    port: int | None = None  # None: not restricted (the consumer resolves it)
    app_protocol: str | None = None


@dataclass(frozen=True)
class EndpointSlice:
    namespace: str
    name: str
    address_type: str
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def service_name(self) -> str | None:
        """The Service this slice belongs to (its ``kubernetes.io/service-name`` label)."""
        return self.labels.get(SERVICE_NAME_LABEL) or None


# --------------------------------------------------------------------------- Service


def _service_port(name: str, path: str, p: Any, typ: str) -> ServicePort:
    kind = "Service"
    if not isinstance(p, Mapping):
        raise ObjectError(kind, name, path, "must be a map")
    port = f.port_number(kind, name, f"{path}.port", p.get("port"))
    proto = f.one_of(kind, name, f"{path}.protocol", p.get("protocol"), SERVICE_PROTOCOLS, "TCP")
    pname = p.get("name") or ""
    if not isinstance(pname, str) or (pname and (len(pname) > 63 or not DNS_LABEL_RE.match(pname))):
        raise ObjectError(kind, name, f"{path}.name", f"{pname!r} must be a DNS label (lower-case letters, "
                          "digits and '-', at most 63 characters)")
    tp: Any = p.get("targetPort")
    if tp is None or tp == 0:
        tp = port
    elif isinstance(tp, str) and tp.isdigit():
        tp = int(tp)
    if isinstance(tp, str):
        if len(tp) > 15 or not IANA_SVC_NAME_RE.match(tp):
            raise ObjectError(kind, name, f"{path}.targetPort", f"{tp!r} must be a port number 1..65535 or a port "
                              "name (lower-case letters, digits and '-', at least one letter, at most 15)")
    else:
        tp = f.port_number(kind, name, f"{path}.targetPort", tp)
    np = p.get("nodePort")
    if np in (None, 0):
        np = None
    else:
        np = f.port_number(kind, name, f"{path}.nodePort", np)
        if typ not in ("NodePort", "LoadBalancer"):
            raise ObjectError(kind, name, f"{path}.nodePort", f"may not be used when type is {typ!r}")
        lo, hi = NODE_PORT_RANGE
        if not lo <= np <= hi:
            raise ObjectError(kind, name, f"{path}.nodePort", f"{np} is outside the node port range {lo}-{hi}")
    return ServicePort(port=port, protocol=proto, name=pname, target_port=tp, node_port=np)


def _cluster_ips(name: str, spec: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    kind = "Service"
    cip = spec.get("clusterIP") or None
    ips = f.sequence(kind, name, "spec.clusterIPs", spec.get("clusterIPs"))
    if cip is not None and not isinstance(cip, str):
        raise ObjectError(kind, name, "spec.clusterIP", "must be a string")
    out: list[str] = []
    for i, v in enumerate(ips):
        if v == CLUSTER_IP_NONE and i == 0:
            out.append(v)
            continue
        a = f.ip(kind, name, f"spec.clusterIPs[{i}]", v)
        if a is None:
            raise ObjectError(kind, name, f"spec.clusterIPs[{i}]", "must be an IP address")
        out.append(a)
    if cip is not None and cip != CLUSTER_IP_NONE:
        cip = f.ip(kind, name, "spec.clusterIP", cip)
    if cip is not None and out and out[0] != cip:
        raise ObjectError(kind, name, "spec.clusterIPs[0]", f"{out[0]!r} must equal spec.clusterIP {cip!r}")
    if cip is None and out:
        cip = out[0]
    if CLUSTER_IP_NONE in out[1:] or (cip == CLUSTER_IP_NONE and len(out) > 1):
        raise ObjectError(kind, name, "spec.clusterIPs", "'None' must be the only value")
    if len(out) > 2:
        raise ObjectError(kind, name, "spec.clusterIPs", "at most two addresses (one per IP family)")
    if len(out) == 2 and ipaddress.ip_address(out[0]).version == ipaddress.ip_address(out[1]).version:
        raise ObjectError(kind, name, "spec.clusterIPs[1]", "must be of the other IP family than clusterIPs[0]")
    if cip is not None and not out:
        out = [cip]
    return cip, tuple(out)


def _service_ports(name: str, spec: Mapping[str, Any], typ: str, cip: str | None) -> list[ServicePort]:
    """spec.ports, each checked, and unique by name, by port/protocol and by nodePort/protocol."""
    kind = "Service"
    raw_ports = f.sequence(kind, name, "spec.ports", spec.get("ports"))
    if not raw_ports and cip != CLUSTER_IP_NONE:
        raise ObjectError(kind, name, "spec.ports", "is required (at least one port) unless the Service is headless")
    ports = [_service_port(name, f"spec.ports[{i}]", p, typ) for i, p in enumerate(raw_ports)]
    names: dict[str, int] = {}
    pairs: dict[tuple[int, str], int] = {}
    node_ports: dict[tuple[int, str], int] = {}
    for i, sp in enumerate(ports):
        if len(ports) > 1 and not sp.name:
            raise ObjectError(kind, name, f"spec.ports[{i}].name", "is required when the Service has several ports")
        if sp.name in names:
            raise ObjectError(kind, name, f"spec.ports[{i}].name", f"{sp.name!r} is already used by "
                              f"spec.ports[{names[sp.name]}]")
        names[sp.name] = i
        if (sp.port, sp.protocol) in pairs:
            raise ObjectError(kind, name, f"spec.ports[{i}]", f"{sp.port}/{sp.protocol} is already declared by "
                              f"spec.ports[{pairs[(sp.port, sp.protocol)]}]")
        pairs[(sp.port, sp.protocol)] = i
        if sp.node_port is not None:
            if (sp.node_port, sp.protocol) in node_ports:
                raise ObjectError(kind, name, f"spec.ports[{i}].nodePort", f"{sp.node_port}/{sp.protocol} is "
                                  f"already used by spec.ports[{node_ports[(sp.node_port, sp.protocol)]}]")
            node_ports[(sp.node_port, sp.protocol)] = i
    return ports


def _affinity(name: str, spec: Mapping[str, Any]) -> tuple[str, int]:
    """spec.sessionAffinity and its timeout (0 without ClientIP affinity)."""
    kind = "Service"
    affinity = f.one_of(kind, name, "spec.sessionAffinity", spec.get("sessionAffinity"), AFFINITIES, "None")
    timeout = 0
    sac = f.mapping(kind, name, "spec.sessionAffinityConfig", spec.get("sessionAffinityConfig"))
    client = f.mapping(kind, name, "spec.sessionAffinityConfig.clientIP", sac.get("clientIP"))
    tpath = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    if affinity == "ClientIP":
        timeout = client.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= MAX_AFFINITY_TIMEOUT:
            raise ObjectError(kind, name, tpath, f"{timeout!r} must be 1..{MAX_AFFINITY_TIMEOUT}")
    elif client.get("timeoutSeconds") is not None:
        raise ObjectError(kind, name, tpath, "may only be set with sessionAffinity: ClientIP")
    return affinity, timeout


def parse_service(obj: Mapping[str, Any]) -> Service:
    kind = "Service"
    name, ns, labels = f.meta(obj, kind, True)
    spec = f.mapping(kind, name, "spec", obj.get("spec"))
    typ = f.one_of(kind, name, "spec.type", spec.get("type"), SERVICE_TYPES, "ClusterIP")
    cip, cips = _cluster_ips(name, spec)
    if typ == "ExternalName":
        ext = spec.get("externalName")
        if not isinstance(ext, str) or not ext:
            raise ObjectError(kind, name, "spec.externalName", "is required for type ExternalName")
        return Service(namespace=ns, name=name, type=typ, external_name=ext, labels=labels)
    if cip == CLUSTER_IP_NONE and typ != "ClusterIP":
        raise ObjectError(kind, name, "spec.clusterIP", f"may not be 'None' for type {typ!r}")
    ports = _service_ports(name, spec, typ, cip)
    sel = spec.get("selector")
    selector = None if sel is None else f.labels(kind, name, "spec.selector", sel)
    affinity, timeout = _affinity(name, spec)
    etp = spec.get("externalTrafficPolicy")
    if etp is not None and typ not in ("NodePort", "LoadBalancer"):
        raise ObjectError(kind, name, "spec.externalTrafficPolicy", f"may only be set when type is NodePort or "
                          f"LoadBalancer, not {typ!r}")
    etp = f.one_of(kind, name, "spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES, "Cluster")
    itp = f.one_of(kind, name, "spec.internalTrafficPolicy", spec.get("internalTrafficPolicy"), TRAFFIC_POLICIES,
                   "Cluster")
    fams = f.sequence(kind, name, "spec.ipFamilies", spec.get("ipFamilies"))
    families = tuple(f.one_of(kind, name, f"spec.ipFamilies[{i}]", v, IP_FAMILIES) for i, v in enumerate(fams))
    if len(families) > 2 or len(set(families)) != len(families):
        raise ObjectError(kind, name, "spec.ipFamilies", "at most one entry per IP family")
    fp = spec.get("ipFamilyPolicy")
    fpol = None if fp is None else f.one_of(kind, name, "spec.ipFamilyPolicy", fp, IP_FAMILY_POLICIES)
    if fpol == "SingleStack" and len(families) > 1:
        raise ObjectError(kind, name, "spec.ipFamilies", "two families need ipFamilyPolicy PreferDualStack or "
                          "RequireDualStack")
    pnra = spec.get("publishNotReadyAddresses", False)
    if not isinstance(pnra, bool):
        raise ObjectError(kind, name, "spec.publishNotReadyAddresses", f"{pnra!r} is not a boolean")
    return Service(namespace=ns, name=name, type=typ, selector=selector, cluster_ip=cip, cluster_ips=cips,
                   ports=tuple(ports), session_affinity=affinity, affinity_timeout=timeout,
                   external_traffic_policy=etp, internal_traffic_policy=itp, ip_families=families,
                   ip_family_policy=fpol, publish_not_ready_addresses=pnra, labels=labels)


# --------------------------------------------------------------------------- EndpointSlice


def _slice_endpoint(name: str, path: str, e: Any, address_type: str) -> SliceEndpoint:
    kind = "EndpointSlice"
    if not isinstance(e, Mapping):
        raise ObjectError(kind, name, path, "must be a map")
    addrs = f.sequence(kind, name, f"{path}.addresses", e.get("addresses"))
    if not 1 <= len(addrs) <= MAX_ENDPOINT_ADDRESSES:
        raise ObjectError(kind, name, f"{path}.addresses", f"must list 1..{MAX_ENDPOINT_ADDRESSES} addresses")
    out = []
    for i, a in enumerate(addrs):
        ap = f"{path}.addresses[{i}]"
        if address_type == "FQDN":
            if not isinstance(a, str) or not a:
                raise ObjectError(kind, name, ap, "must be a host name")
            out.append(a)
            continue
        ipv = f.ip(kind, name, ap, a)
        if ipv is None or f"IPv{ipaddress.ip_address(ipv).version}" != address_type:
            raise ObjectError(kind, name, ap, f"{a!r} is not an {address_type} address")
        out.append(ipv)
    cond = f.mapping(kind, name, f"{path}.conditions", e.get("conditions"))
    ready = f.optional_bool(kind, name, f"{path}.conditions.ready", cond.get("ready"))
    serving = f.optional_bool(kind, name, f"{path}.conditions.serving", cond.get("serving"))
    term = f.optional_bool(kind, name, f"{path}.conditions.terminating", cond.get("terminating"))
    ready = True if ready is None else ready
    ref = None
    raw_ref = e.get("targetRef")
    if raw_ref is not None:
        r = f.mapping(kind, name, f"{path}.targetRef", raw_ref)
        rn = r.get("name")
        if not isinstance(rn, str) or not rn:
            raise ObjectError(kind, name, f"{path}.targetRef.name", "is required")
        ref = TargetRef(kind=str(r.get("kind") or ""), namespace=str(r.get("namespace") or ""), name=rn)
    node = e.get("nodeName")
    if node is not None and (not isinstance(node, str) or not node):
        raise ObjectError(kind, name, f"{path}.nodeName", "must be a non-empty string")
    return SliceEndpoint(addresses=tuple(out), ready=ready, serving=ready if serving is None else serving,
                         terminating=bool(term), node_name=node, target_ref=ref,
                         hostname=e.get("hostname") or None, zone=e.get("zone") or None)


def _slice_port(name: str, path: str, p: Any) -> SlicePort:
    kind = "EndpointSlice"
    if not isinstance(p, Mapping):
        raise ObjectError(kind, name, path, "must be a map")
    pname = p.get("name") or ""
    if not isinstance(pname, str) or (pname and (len(pname) > 63 or not DNS_LABEL_RE.match(pname))):
        raise ObjectError(kind, name, f"{path}.name", f"{pname!r} must be a DNS label")
    port = p.get("port")
    port = None if port is None else f.port_number(kind, name, f"{path}.port", port)
    proto = f.one_of(kind, name, f"{path}.protocol", p.get("protocol"), SERVICE_PROTOCOLS, "TCP")
    app = p.get("appProtocol")
    return SlicePort(name=pname, protocol=proto, port=port, app_protocol=app if isinstance(app, str) else None)


def parse_endpointslice(obj: Mapping[str, Any]) -> EndpointSlice:
    kind = "EndpointSlice"
    name, ns, labels = f.meta(obj, kind, True)
    at = f.one_of(kind, name, "addressType", obj.get("addressType"), ADDRESS_TYPES)
    eps = f.sequence(kind, name, "endpoints", obj.get("endpoints"))
    if len(eps) > MAX_SLICE_ENDPOINTS:
        raise ObjectError(kind, name, "endpoints", f"at most {MAX_SLICE_ENDPOINTS} endpoints")
    raw_ports = f.sequence(kind, name, "ports", obj.get("ports"))
    if len(raw_ports) > MAX_SLICE_PORTS:
        raise ObjectError(kind, name, "ports", f"at most {MAX_SLICE_PORTS} ports")
    ports = [_slice_port(name, f"ports[{i}]", p) for i, p in enumerate(raw_ports)]
    seen: dict[str, int] = {}
    for i, sp in enumerate(ports):
        if sp.name in seen:
            raise ObjectError(kind, name, f"ports[{i}].name", f"{sp.name!r} is already used by ports[{seen[sp.name]}]")
        seen[sp.name] = i
    return EndpointSlice(namespace=ns, name=name, address_type=at,
                         endpoints=tuple(_slice_endpoint(name, f"endpoints[{i}]", e, at) for i, e in enumerate(eps)),
                         ports=tuple(ports), labels=labels)


# --------------------------------------------------------------------------- IP families


def resolve_ip_families(svc: Service, cluster_families: tuple[int, ...] | list[int]) -> tuple[tuple[str, ...], str]:
    """``spec.ipFamilies`` and ``spec.ipFamilyPolicy`` as the API server stores them on create.

    ``cluster_families`` are the families of the cluster's serviceCIDR, primary first. The rules
    are the API server's (``pkg/registry/core/service/storage/alloc.go`` ``initIPFamilyFields``):
    the policy defaults to SingleStack (RequireDualStack for a headless Service without selector
    on a dual-stack cluster); two families or two clusterIPs need a dual-stack policy; each
    ``ipFamilies[i]`` matches ``clusterIPs[i]``; families left unsaid come from the clusterIPs,
    then the cluster's primary family, then (dual-stack policies) the cluster's other family.
    A family the cluster has no serviceCIDR for is refused, except the secondary family under
    PreferDualStack, which is dropped. ExternalName Services have none.
    """
    kind, name = "Service", svc.name
    if svc.type == "ExternalName":
        return (), ""
    have = [ipfamily.family_name(v) for v in cluster_families]
    ips = [ip for ip in svc.cluster_ips if ip != CLUSTER_IP_NONE]
    policy = svc.ip_family_policy
    if policy is None:
        if len(svc.ip_families) > 1 or len(ips) > 1:
            raise ObjectError(kind, name, "spec.ipFamilyPolicy", "must be PreferDualStack or RequireDualStack "
                              "when two ipFamilies or clusterIPs are given")
        policy = "RequireDualStack" if svc.headless and svc.selector is None and len(have) > 1 else "SingleStack"
    if policy == "SingleStack" and len(ips) > 1:
        raise ObjectError(kind, name, "spec.clusterIPs", "two addresses need ipFamilyPolicy PreferDualStack or "
                          "RequireDualStack")
    if policy == "RequireDualStack" and len(have) < 2:
        raise ObjectError(kind, name, "spec.ipFamilyPolicy", f"RequireDualStack: the cluster's serviceCIDR has "
                          f"only {', '.join(have) or 'no'} range(s)")
    families = list(svc.ip_families)
    for i, ip in enumerate(ips):
        fam = f"IPv{ipaddress.ip_address(ip).version}"
        if i < len(families) and families[i] != fam:
            raise ObjectError(kind, name, f"spec.ipFamilies[{i}]", f"{families[i]} does not match "
                              f"spec.clusterIPs[{i}] {ip} ({fam})")
        if i >= len(families):
            families.append(fam)
    for i, fam in enumerate(families):
        if fam in have:
            continue
        if i == 1 and policy == "PreferDualStack" and len(ips) < 2:
            families = families[:1]
            break
        where = f"spec.clusterIPs[{i}]" if i < len(ips) else f"spec.ipFamilies[{i}]"
        raise ObjectError(kind, name, where, f"{fam} is not served: the cluster's serviceCIDR has no {fam} range")
    if not families:
        if not have:
            raise ObjectError(kind, name, "spec.ipFamilies", "the cluster has no serviceCIDR")
        families.append(have[0])
    if policy != "SingleStack" and len(families) == 1:
        families += [fam for fam in have if fam != families[0]]
    return tuple(families), policy
