"""The lab spec file (``novanet lab up --spec FILE``): pydantic models, loading, and cross-checks.

Every error names the field as a path into the file (``pods[3].namespace``), with the object's name
where that helps, so a user can find the line without reading a traceback. The format is documented
in docs/lab.md; keep both in step.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from novanet_core.config.fielderrors import field_errors
from novanet_core.protocols import L4Protocol
from novanet_lab import podroutes
from novanet_lab.errors import LabError

# Lab and node names end up in netns names, directory names, bpffs paths and unix socket paths
# (108-byte limit), so they are DNS labels with a tighter length cap than Kubernetes' 63.
LAB_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LAB_NAME = 32
MAX_NODE_NAME = 32
DNS_LABEL_RE = LAB_NAME_RE

# Config keys the lab sets per node; a spec that sets them under cluster: would break isolation
# between nodes or labs, so they are rejected rather than silently overridden.
LAB_OWNED_KEYS = {
    "nodeName": "the node's name",
    "nodeIP": "the node's underlay address",
    "podCIDR": "nodes[].podCIDR",
    "sockets": "per-node sockets under /run/novanet-lab/<lab>/<node>/",
    "stateSource": "the lab's shared manifest directory",
    "stateDir": "<lab state dir>/<node>/agent-state",
}
LAB_OWNED_SUBKEYS = {("ipam", "dataDir"), ("bpf", "root"), ("bpf", "cgroupRoot")}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _dns_label(v: str, max_len: int = 63) -> str:
    if not isinstance(v, str) or len(v) > max_len or not DNS_LABEL_RE.match(v):
        raise ValueError(
            f"{v!r} must be lower-case letters, digits and '-', start and end alphanumeric, at most {max_len} characters"
        )
    return v


class PortSpec(_Model):
    name: str | None = Field(default=None, min_length=1, max_length=15)
    port: int = Field(ge=1, le=65535)
    # SCTP is accepted so that named SCTP ports can appear in policies, but this kernel has no
    # SCTP sockets, so the pod server does not serve it (see docs/lab.md).
    protocol: L4Protocol = "TCP"


class PodSpec(_Model):
    name: str
    namespace: str = "default"
    node: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[PortSpec] = Field(default_factory=list)
    # What the kubelet would report as the Ready condition (the lab's EndpointSlices follow it).
    ready: bool = True
    # What runs in the pod: the lab's pod server (echoes its name on every declared port), or
    # the cluster DNS server (dnsmasq serving the lab's Service names; see docs/services.md).
    server: Literal["podserver", "dns"] = "podserver"

    _name = field_validator("name", "namespace")(_dns_label)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class ServiceSpec(_Model):
    """A Kubernetes Service, its ``spec:`` keys written beside ``name:``; checked by the agents' parser."""

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    type: Any = None
    selector: Any = None
    clusterIP: Any = None
    ports: Any = None
    sessionAffinity: Any = None
    sessionAffinityConfig: Any = None
    externalTrafficPolicy: Any = None
    internalTrafficPolicy: Any = None
    ipFamilies: Any = None
    ipFamilyPolicy: Any = None
    publishNotReadyAddresses: Any = None
    externalName: Any = None

    _name = field_validator("name", "namespace")(_dns_label)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_object(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.model_dump(exclude={"name", "namespace", "labels"}).items() if v is not None}
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


class NamespaceSpec(_Model):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)

    _name = field_validator("name")(_dns_label)


class NodeSpec(_Model):
    name: str
    podCIDR: str | None = None
    ip: str | None = None  # underlay address; default: carved from underlay.cidr

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _dns_label(v, MAX_NODE_NAME)

    @field_validator("podCIDR")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        return None if v is None else _ipv4_net(v)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address") from None


class RouterSpec(_Model):
    """A ToR router for native-routing labs (see novanet_lab.routers)."""

    name: str
    asn: int = Field(ge=1, le=4294967295)
    ip: str | None = None  # underlay address; default: the highest free one
    peers: list[str] | None = None  # node names that peer with it; default: all nodes
    password: str | None = Field(default=None, pattern=r"^[!-~]{1,80}$")

    _n = field_validator("name")(lambda v: _dns_label(v, MAX_NODE_NAME))
    _ip = field_validator("ip")(NodeSpec._ip.__func__)  # type: ignore[attr-defined]


class UnderlaySpec(_Model):
    cidr: str = "172.30.0.0/24"
    mtu: int = Field(default=1500, ge=576, le=9000)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return _ipv4_net(v)


class OutsideSpec(_Model):
    """A host outside the cluster ("the internet"): netns ``<lab>.outside`` on the underlay, which the
    nodes reach through their default route. It has no route to pod addresses, so pod traffic gets
    an answer only when the node rewrote its source (egress.masqueradeEnabled)."""

    enabled: bool = True
    address: str = "203.0.113.1"  # TEST-NET-3: outside every cluster CIDR
    ip: str | None = None  # its underlay address; default the highest one no node or router uses

    @field_validator("address", "ip")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address") from None


class ClusterSpec(BaseModel):
    # Extra keys are NovaNetConfig keys passed through to every agent; they are validated by
    # building the node configs (see novanet_lab.nodeconfig), not here.
    model_config = ConfigDict(extra="allow")

    clusterCIDR: str = "10.42.0.0/16"
    nodeCIDRMaskSize: int = Field(default=24, ge=16, le=28)
    routingMode: Literal["overlay", "native"] = "overlay"
    tunnelProtocol: str = "vxlan"
    policy: dict[str, Any] = Field(default_factory=lambda: {"defaultDeny": False})
    serviceCIDR: str = "10.96.0.0/12"
    # Rules of this kube-proxy mode are installed in every node's netns from the lab's Services
    # (novanet_lab.kubeproxy); "none": no kube-proxy. Lab-only, never sent to the agents.
    kubeProxy: Literal["none", "iptables", "nftables"] = "none"

    @field_validator("clusterCIDR", "serviceCIDR")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return _ipv4_net(v)

    @property
    def kube_proxy_replacement(self) -> bool:
        return bool((self.model_extra or {}).get("kubeProxyReplacement", True))

    def passthrough(self) -> dict[str, Any]:
        """The keys copied into every node's config as they are."""
        out = self.model_dump(exclude_none=True)
        return out


class DaemonSetSpec(_Model):
    """Nodes run NovaNet from the chart's DaemonSet pod under ``podman kube play`` (novanet_lab.daemonset)
    instead of as lab processes. Relative paths are taken from the spec file's directory."""

    chart: str = Field(min_length=1)  # the chart directory (charts/novanet)
    imageStore: str = Field(min_length=1)  # podman image store holding the image (make image: build/image/storage)
    values: dict[str, Any] = Field(default_factory=dict)  # extra Helm values (image.tag, ...)


class LabSpec(_Model):
    name: str = "novanet"
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    underlay: UnderlaySpec = Field(default_factory=UnderlaySpec)
    nodes: list[NodeSpec] = Field(min_length=1)
    namespaces: list[NamespaceSpec] = Field(default_factory=list)
    pods: list[PodSpec] = Field(default_factory=list)
    services: list[ServiceSpec] = Field(default_factory=list)
    routers: list[RouterSpec] = Field(default_factory=list)
    outside: OutsideSpec = Field(default_factory=OutsideSpec)
    daemonset: DaemonSetSpec | None = None

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return validate_lab_name(v)


def validate_lab_name(v: str) -> str:
    return _dns_label(v, MAX_LAB_NAME)


def _ipv4_net(v: str) -> str:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{v!r} is not a CIDR ({e})") from None
    if net.version != 4:
        raise ValueError(f"{v!r}: only IPv4 is supported")
    return str(net)


# --------------------------------------------------------------------------- errors


def loc_path(loc: tuple[Any, ...]) -> str:
    """``("pods", 3, "ports", 0, "port")`` -> ``pods[3].ports[0].port``."""
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            # A key with spaces, colons or unprintable characters is quoted, so the path stays readable
            # (and copyable) whatever a typo put in it.
            k = str(p)
            plain = k.isprintable() and not any(c.isspace() or c == ":" for c in k)
            out += ("." if out else "") + (k if plain else repr(k))
    return out or "(top level)"


def format_errors(e: ValidationError, source: str) -> str:
    lines = [f"  {loc_path(loc)}: {msg}" for loc, msg in field_errors(e)]
    return f"invalid lab spec {source}:\n" + "\n".join(lines)


# --------------------------------------------------------------------------- loading


def load_spec_text(text: str, source: str = "<spec>") -> LabSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LabError(f"lab spec {source} is not valid YAML: {e}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise LabError(f"lab spec {source} is not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise LabError(f"lab spec {source}: the top level must be a map (cluster:, nodes:, namespaces:, pods:)")
    return parse_spec(data, source)


def load_spec(path: str | Path) -> LabSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise LabError(f"lab spec {p} does not exist") from None
    except OSError as e:
        raise LabError(f"cannot read lab spec {p}: {e.strerror or e}") from None
    return load_spec_text(text, str(p))


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> LabSpec:
    try:
        spec = LabSpec.model_validate(data)
    except ValidationError as e:
        raise LabError(format_errors(e, source)) from None
    problems = cross_check(spec)
    if problems:
        raise LabError(f"invalid lab spec {source}:\n" + "\n".join(f"  {p}" for p in problems))
    return spec


def cross_check(spec: LabSpec) -> list[str]:
    """Checks that span several fields; each problem starts with the field path."""
    problems: list[str] = []
    for key, why in LAB_OWNED_KEYS.items():
        if key in (spec.cluster.model_extra or {}):
            problems.append(f"cluster.{key}: set by the lab ({why}); remove it from the spec")
    for parent, child in LAB_OWNED_SUBKEYS:
        sub = (spec.cluster.model_extra or {}).get(parent)
        if isinstance(sub, dict) and child in sub:
            problems.append(f"cluster.{parent}.{child}: set by the lab per node; remove it from the spec")

    seen_nodes: dict[str, int] = {}
    for i, n in enumerate(spec.nodes):
        if n.name in seen_nodes:
            problems.append(f"nodes[{i}].name: {n.name!r} is already used by nodes[{seen_nodes[n.name]}]")
        seen_nodes.setdefault(n.name, i)
    seen_ns: dict[str, int] = {}
    for i, ns in enumerate(spec.namespaces):
        if ns.name in seen_ns:
            problems.append(f"namespaces[{i}].name: {ns.name!r} is already used by namespaces[{seen_ns[ns.name]}]")
        seen_ns.setdefault(ns.name, i)
    seen_pods: dict[str, int] = {}
    for i, p in enumerate(spec.pods):
        where = f"pods[{i}] ({p.key})"
        if p.key in seen_pods:
            problems.append(f"pods[{i}].name: {p.key!r} is already used by pods[{seen_pods[p.key]}]")
        seen_pods.setdefault(p.key, i)
        if p.namespace not in seen_ns and p.namespace != "default":
            problems.append(f"{where}.namespace: {p.namespace!r} is not declared under namespaces:")
        if p.node is not None and p.node not in seen_nodes:
            problems.append(f"{where}.node: {p.node!r} is not one of the nodes ({', '.join(seen_nodes)})")
        problems.extend(check_ports(p.ports, where))
    problems.extend(_check_addresses(spec))
    problems.extend(_check_routers(spec, seen_nodes))
    problems.extend(_check_services(spec, seen_ns))
    problems.extend(_check_outside(spec))
    return problems


def _check_services(spec: LabSpec, namespaces: dict[str, int]) -> list[str]:
    from novanet_core.state.model import ObjectError
    from novanet_lab.services.objects import Allocator, admit

    problems = []
    c = spec.cluster
    if c.kubeProxy != "none" and c.kube_proxy_replacement:
        problems.append(f"cluster.kubeProxy: {c.kubeProxy} needs cluster.kubeProxyReplacement: false (with true, "
                        "NovaNet translates Services itself and kube-proxy must not run)")
    if ipaddress.ip_network(c.serviceCIDR).overlaps(ipaddress.ip_network(c.clusterCIDR)):
        problems.append(f"cluster.serviceCIDR: {c.serviceCIDR} overlaps clusterCIDR {c.clusterCIDR}")
        return problems
    alloc = Allocator(c.serviceCIDR, [])
    seen: dict[str, int] = {}
    # Services that name their ClusterIP or nodePorts first, as an API server would have taken
    # them before allocating for the others; errors still name each Service's own index.
    def explicit(s: ServiceSpec) -> bool:
        return s.clusterIP is not None or any(isinstance(p, dict) and p.get("nodePort") for p in s.ports or [])

    order = sorted(range(len(spec.services)), key=lambda i: not explicit(spec.services[i]))
    for i in order:
        s = spec.services[i]
        if s.key in seen:
            problems.append(f"services[{i}].name: {s.key!r} is already used by services[{seen[s.key]}]")
            continue
        seen[s.key] = i
        if s.namespace not in namespaces and s.namespace != "default":
            problems.append(f"services[{i}] ({s.key}).namespace: {s.namespace!r} is not declared under namespaces:")
        try:
            admit(s.to_object(), None, alloc)
        except ObjectError as e:
            problems.append(f"services[{i}] ({s.key}).{e.path.removeprefix('spec.')}: {str(e).split(': ', 2)[-1]}")
        except LabError as e:
            problems.append(f"services[{i}] ({s.key}): {e}")
    return problems


def _check_outside(spec: LabSpec) -> list[str]:
    o = spec.outside
    if not o.enabled:
        return []
    problems = []
    addr = ipaddress.IPv4Address(o.address)
    for what, cidr in (("cluster.clusterCIDR", spec.cluster.clusterCIDR), ("underlay.cidr", spec.underlay.cidr),
                       ("cluster.serviceCIDR", spec.cluster.serviceCIDR)):
        try:
            inside = addr in ipaddress.IPv4Network(str(cidr))
        except ValueError:
            continue  # a bad serviceCIDR is reported by the agent config check
        if inside:
            problems.append(f"outside.address: {o.address} is inside {what} {cidr}; it must be outside the cluster")
    if o.ip is not None:
        net = ipaddress.IPv4Network(spec.underlay.cidr)
        if ipaddress.IPv4Address(o.ip) not in net:
            problems.append(f"outside.ip: {o.ip} is not in underlay.cidr {spec.underlay.cidr}")
        if o.ip in {n.ip for n in spec.nodes} | {r.ip for r in spec.routers}:
            problems.append(f"outside.ip: {o.ip} is already used by a node or router")
    return problems


def _check_routers(spec: LabSpec, nodes: dict[str, int]) -> list[str]:
    problems = []
    if spec.routers and spec.cluster.routingMode != "native":
        problems.append("routers: need cluster.routingMode: native")
    elif spec.routers and not podroutes.uses_frr(spec):
        problems.append(f"routers: they speak BGP, so they need a routing backend the lab runs FRR for "
                        f"(cluster.routing.type: {', '.join(podroutes.FRR_BACKENDS)}), not "
                        f"{podroutes.routing_type(spec)!r}")
    seen: dict[str, int] = {}
    for i, r in enumerate(spec.routers):
        if r.name in seen or r.name in nodes:
            problems.append(f"routers[{i}].name: {r.name!r} is already used by a node or router")
        seen.setdefault(r.name, i)
        for j, p in enumerate(r.peers or []):
            if p not in nodes:
                problems.append(f"routers[{i}].peers[{j}]: {p!r} is not one of the nodes ({', '.join(nodes)})")
        if spec.daemonset is not None and r.peers is not None and sorted(r.peers) != sorted(nodes):
            # One ConfigMap serves every node of a DaemonSet: a peer list per node cannot be expressed.
            problems.append(f"routers[{i}].peers: with daemonset: a router peers with every node (leave peers out)")
    return problems


def check_ports(ports: list[PortSpec], where: str) -> list[str]:
    problems = []
    seen: dict[tuple[int, str], int] = {}
    names: dict[str, int] = {}
    for j, port in enumerate(ports):
        k = (port.port, port.protocol)
        if k in seen:
            problems.append(f"{where}.ports[{j}]: {port.port}/{port.protocol} is already declared by ports[{seen[k]}]")
        seen.setdefault(k, j)
        if port.name is not None:
            if port.name in names:
                problems.append(f"{where}.ports[{j}].name: {port.name!r} is already used by ports[{names[port.name]}]")
            names.setdefault(port.name, j)
    return problems


def _check_addresses(spec: LabSpec) -> list[str]:
    # Run the allocators once so that spec errors (overlaps, exhaustion) surface at parse time.
    from novanet_lab.addressing import AddressError, assign_node_ips, carve_pod_cidrs

    problems = []
    try:
        carve_pod_cidrs(spec.cluster.clusterCIDR, spec.cluster.nodeCIDRMaskSize, [(n.name, n.podCIDR) for n in spec.nodes])
    except AddressError as e:
        problems.append(str(e))
    try:
        assign_node_ips(spec.underlay.cidr, [(n.name, n.ip) for n in spec.nodes])
    except AddressError as e:
        problems.append(str(e))
    return problems
