"""Kubernetes-shaped objects the agent needs, parsed from plain dicts.

Only the fields NovaNet uses are kept. Parsing validates and raises :class:`ObjectError` with the
field path (``spec.containers[0].ports[1].protocol``), so a bad manifest is reported, not crashed on.
NetworkPolicy specs are kept as validated dicts; ``novanet_core.policy`` interprets them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from novanet_core.ipfamily import family_of, parse_cidrs, parse_ips
from novanet_core.protocols import L4_PROTOCOLS
from novanet_core.state.fields import ObjectError
from novanet_core.state.fields import ip as _ip
from novanet_core.state.fields import meta as _meta
from novanet_core.state.services import EndpointSlice, Service, parse_endpointslice, parse_service

KINDS = ("Node", "Namespace", "Pod", "NetworkPolicy", "Service", "EndpointSlice")
__all__ = ["KINDS", "ClusterState", "ContainerPort", "EndpointSlice", "Namespace", "NetworkPolicy",
           "Node", "ObjectError", "Pod", "Service", "StateEvent", "parse_object", "parse_ports"]


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Node:
    name: str
    internal_ip: str | None = None
    pod_cidr: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Dual-stack: spec.podCIDRs and every InternalIP (one per family), primary first; a
    # single-stack node has its one value here too.
    pod_cidrs: tuple[str, ...] = ()
    internal_ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.pod_cidrs and self.pod_cidr:
            object.__setattr__(self, "pod_cidrs", (self.pod_cidr,))
        if not self.internal_ips and self.internal_ip:
            object.__setattr__(self, "internal_ips", (self.internal_ip,))

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name

    @property
    def effective_labels(self) -> dict[str, str]:
        # Kubernetes sets this label on every namespace (since 1.21); policies select on it.
        return {**self.labels, "kubernetes.io/metadata.name": self.name}


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    node: str | None = None
    ip: str | None = None
    host_ip: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    # status.podIPs / status.hostIPs: one address per family, primary (podIP/hostIP) first.
    ips: tuple[str, ...] = ()
    host_ips: tuple[str, ...] = ()
    # status.conditions Ready == "True" (what the EndpointSlice controller reads) and
    # metadata.deletionTimestamp set.
    ready: bool = False
    terminating: bool = False

    def __post_init__(self) -> None:
        if not self.ips and self.ip:
            object.__setattr__(self, "ips", (self.ip,))
        if not self.host_ips and self.host_ip:
            object.__setattr__(self, "host_ips", (self.host_ip,))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    spec: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class StateEvent:
    type: str  # ADDED, MODIFIED, DELETED, or SYNCED (a source's version marker)
    kind: str  # one of KINDS, or "" for SYNCED
    obj: Any
    version: int = 0


@dataclass
class ClusterState:
    nodes: dict[str, Node] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    endpointslices: dict[str, EndpointSlice] = field(default_factory=dict)
    version: int = 0

    def table(self, kind: str) -> dict[str, Any]:
        return {"Node": self.nodes, "Namespace": self.namespaces, "Pod": self.pods, "NetworkPolicy": self.policies,
                "Service": self.services, "EndpointSlice": self.endpointslices}[kind]

    def apply(self, ev: StateEvent) -> None:
        if ev.type == "SYNCED":
            self.version = max(self.version, ev.version)
            return
        t = self.table(ev.kind)
        if ev.type == "DELETED":
            t.pop(ev.obj.key, None)
        else:
            t[ev.obj.key] = ev.obj


# --------------------------------------------------------------------------- parsing


def parse_ports(kind: str, name: str, path: str, v: Any) -> tuple[ContainerPort, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise ObjectError(kind, name, path, "must be a list")
    out = []
    for i, p in enumerate(v):
        pp = f"{path}[{i}]"
        if not isinstance(p, Mapping):
            raise ObjectError(kind, name, pp, "must be a map")
        port = p.get("containerPort", p.get("port"))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ObjectError(kind, name, f"{pp}.containerPort", f"{port!r} is not a port number 1..65535")
        proto = p.get("protocol", "TCP")
        if proto not in L4_PROTOCOLS:
            raise ObjectError(kind, name, f"{pp}.protocol", f"{proto!r} is not one of {', '.join(L4_PROTOCOLS)}")
        pname = p.get("name")
        if pname is not None and (not isinstance(pname, str) or not pname or len(pname) > 15):
            raise ObjectError(kind, name, f"{pp}.name", "must be a string of 1..15 characters")
        out.append(ContainerPort(port=port, protocol=proto, name=pname))
    return tuple(out)


def _pod_ready(status: Mapping[str, Any], name: str) -> bool:
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list):
        raise ObjectError("Pod", name, "status.conditions", "must be a list")
    for c in conditions:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _node_pod_cidrs(spec: Mapping[str, Any], name: str) -> list[str]:
    """spec.podCIDRs (one per family), or spec.podCIDR; podCIDR must be podCIDRs[0] when both are set."""
    single, many = spec.get("podCIDR"), spec.get("podCIDRs")
    out: list[str] = []
    if many is not None:
        if not isinstance(many, list) or not all(isinstance(c, str) for c in many):
            raise ObjectError("Node", name, "spec.podCIDRs", "must be a list of CIDR strings")
        if many:
            try:
                out = [str(n) for n in parse_cidrs(many)]
            except ValueError as e:
                raise ObjectError("Node", name, "spec.podCIDRs", str(e)) from None
    if single is not None:
        if not isinstance(single, str):
            raise ObjectError("Node", name, "spec.podCIDR", f"{single!r} is not a CIDR string")
        try:
            first = str(ipaddress.ip_network(single, strict=True))
        except ValueError as e:
            raise ObjectError("Node", name, "spec.podCIDR", str(e)) from None
        if out and out[0] != first:
            raise ObjectError("Node", name, "spec.podCIDR", f"{first} is not spec.podCIDRs[0] ({out[0]})")
        out = out or [first]
    return out


def _ip_list(kind: str, name: str, status: Mapping[str, Any], one: str, many: str) -> list[str]:
    """status.<many> (``[{ip: ...}]``, one per family) or status.<one>; <one> must be <many>[0]."""
    first = _ip(kind, name, f"status.{one}", status.get(one))
    raw = status.get(many)
    if raw is None or raw == []:
        return [first] if first else []
    if not isinstance(raw, list):
        raise ObjectError(kind, name, f"status.{many}", "must be a list")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ObjectError(kind, name, f"status.{many}[{i}]", "must be a map with ip")
        addr = _ip(kind, name, f"status.{many}[{i}].ip", entry.get("ip"))
        if addr:
            out.append(addr)
    if not out:
        return [first] if first else []
    try:
        parse_ips(out)
    except ValueError as e:
        raise ObjectError(kind, name, f"status.{many}", str(e)) from None
    if first and out[0] != first:
        raise ObjectError(kind, name, f"status.{one}", f"{first} is not status.{many}[0] ({out[0]})")
    return out


def _parse_node(obj: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]) -> Node:
    kind = "Node"
    name, _, labels = _meta(obj, kind, False)
    ips: list[str] = []
    addresses = status.get("addresses") or []
    if not isinstance(addresses, list):
        raise ObjectError(kind, name, "status.addresses", "must be a list")
    for i, a in enumerate(addresses):
        if isinstance(a, Mapping) and a.get("type") == "InternalIP":
            addr = _ip(kind, name, f"status.addresses[{i}].address", a.get("address"))
            # The kubelet lists one InternalIP per family, primary first; a second of one
            # family is an alias the datapath has no use for.
            if addr and all(family_of(x) != family_of(addr) for x in ips):
                ips.append(addr)
    cidrs = _node_pod_cidrs(spec, name)
    return Node(name=name, internal_ip=ips[0] if ips else None, pod_cidr=cidrs[0] if cidrs else None,
                labels=labels, pod_cidrs=tuple(cidrs), internal_ips=tuple(ips))


def _parse_pod(obj: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]) -> Pod:
    kind = "Pod"
    name, ns, labels = _meta(obj, kind, True)
    ports: list[ContainerPort] = []
    containers = spec.get("containers") or []
    if not isinstance(containers, list):
        raise ObjectError(kind, name, "spec.containers", "must be a list")
    for ci, c in enumerate(containers):
        if not isinstance(c, Mapping):
            raise ObjectError(kind, name, f"spec.containers[{ci}]", "must be a map")
        ports.extend(parse_ports(kind, name, f"spec.containers[{ci}].ports", c.get("ports")))
    node = spec.get("nodeName") or None
    if node is not None and not isinstance(node, str):
        raise ObjectError(kind, name, "spec.nodeName", "must be a string")
    pod_ips = _ip_list(kind, name, status, "podIP", "podIPs")
    host_ips = _ip_list(kind, name, status, "hostIP", "hostIPs")
    return Pod(
        namespace=ns,
        name=name,
        labels=labels,
        node=node,
        ip=pod_ips[0] if pod_ips else None,
        host_ip=host_ips[0] if host_ips else None,
        ips=tuple(pod_ips),
        host_ips=tuple(host_ips),
        ports=tuple(ports),
        ready=_pod_ready(status, name),
        terminating=bool((obj.get("metadata") or {}).get("deletionTimestamp")),
    )


def parse_object(obj: Mapping[str, Any]) -> Node | Namespace | Pod | NetworkPolicy | Service | EndpointSlice:
    """Parse one Kubernetes-style object; raises ObjectError naming the bad field."""
    if not isinstance(obj, Mapping):
        raise ObjectError("?", "?", "", "object must be a map")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise ObjectError(str(kind), "?", "kind", f"must be one of {', '.join(KINDS)}")
    if kind == "Service":
        return parse_service(obj)
    if kind == "EndpointSlice":
        return parse_endpointslice(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, Mapping):
        raise ObjectError(kind, "?", "spec", "must be a map")
    if not isinstance(status, Mapping):
        raise ObjectError(kind, "?", "status", "must be a map")
    if kind == "Node":
        return _parse_node(obj, spec, status)
    if kind == "Namespace":
        name, _, labels = _meta(obj, kind, False)
        return Namespace(name=name, labels=labels)
    if kind == "Pod":
        return _parse_pod(obj, spec, status)
    name, ns, _ = _meta(obj, kind, True)
    # Structural validation of policies lives with the compiler (novanet_core.policy); the
    # source only checks that spec is a map, so one bad policy never blocks the others.
    return NetworkPolicy(namespace=ns, name=name, spec=dict(spec))
