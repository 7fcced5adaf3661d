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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from novanet_core import ipfamily
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
    # One range per family of clusterCIDR at most (a family left out is carved); comma-separated or a list
    podCIDR: str | None = None
    ip: str | None = None  # underlay address per family of underlay.cidr; default: assigned from it

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _dns_label(v, MAX_NODE_NAME)

    @field_validator("podCIDR", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> str | None:
        return None if v is None else _cidrs(v)

    @field_validator("ip", mode="before")
    @classmethod
    def _ip(cls, v: Any) -> str | None:
        return None if v is None else ipfamily.join(ipfamily.parse_ips(v))


def _ipv4_address(v: str | None) -> str | None:
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
    # BGP between the nodes and a router runs over IPv4 in this release (native-routing.md)
    _ip = field_validator("ip")(_ipv4_address)


UnderlayFamily = Literal["IPv4", "IPv6", "dual"]
# The underlay ranges a family choice stands for when no cidr is given (fd00:172:30::/64 is a
# unique-local range, as private as 172.30.0.0/24).
DEFAULT_UNDERLAY = {4: "172.30.0.0/24", 6: "fd00:172:30::/64"}
FAMILY_CHOICE = {"IPv4": (4,), "IPv6": (6,), "dual": (4, 6)}


class UnderlaySpec(_Model):
    # One range per family (comma-separated or a list, the first is the primary family: the nodes'
    # nodeIP order); or leave it out and choose the family: the defaults of DEFAULT_UNDERLAY.
    cidr: str | None = None
    family: UnderlayFamily | None = None
    mtu: int = Field(default=1500, ge=576, le=9000)

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> str | None:
        if v is None:
            return None
        nets = ipfamily.parse_cidrs(v)
        for n in nets:
            if n.num_addresses < 4:
                raise ValueError(f"{n} is too small (use /30 or larger, /126 for IPv6)")
        return ipfamily.join(nets)

    @model_validator(mode="after")
    def _family(self) -> UnderlaySpec:
        if self.cidr is None:
            self.cidr = ipfamily.join(DEFAULT_UNDERLAY[f] for f in FAMILY_CHOICE[self.family or "IPv4"])
        elif self.family is not None:
            have = sorted(ipfamily.families(ipfamily.split(self.cidr)))
            if have != sorted(FAMILY_CHOICE[self.family]):
                raise ValueError(f"cidr {self.cidr} is not an {self.family} underlay (family: {self.family} wants "
                                 f"{' and '.join(ipfamily.family_name(f) for f in FAMILY_CHOICE[self.family])}); "
                                 "give one range per family, or leave one of the two keys out")
        return self

    @property
    def cidrs(self) -> list[str]:
        return ipfamily.split(self.cidr)

    @property
    def families(self) -> list[int]:
        return ipfamily.families(self.cidrs)


class OutsideSpec(_Model):
    """A host outside the cluster ("the internet"): netns ``<lab>.outside`` on the underlay, which the
    nodes reach through their default route. It has no route to pod addresses, so pod traffic gets
    an answer only when the node rewrote its source (egress.masqueradeEnabled)."""

    enabled: bool = True
    # Per family of the underlay; default TEST-NET-3 203.0.113.1 and the documentation range's
    # 2001:db8:203::1, outside every cluster CIDR
    address: str | None = None
    ip: str | None = None  # its underlay addresses; default the highest ones no node or router uses

    @field_validator("address", "ip", mode="before")
    @classmethod
    def _addr(cls, v: Any) -> str | None:
        return None if v is None else ipfamily.join(ipfamily.parse_ips(v))


DEFAULT_OUTSIDE = {4: "203.0.113.1", 6: "2001:db8:203::1"}


class ClusterSpec(BaseModel):
    # Extra keys are NovaNetConfig keys passed through to every agent; they are validated by
    # building the node configs (see novanet_lab.nodeconfig), not here.
    model_config = ConfigDict(extra="allow")

    # One range per family (comma-separated or a list), the first the primary family (a pod's podIP)
    clusterCIDR: str = "10.42.0.0/16"
    nodeCIDRMaskSize: int = Field(default=24, ge=16, le=28)
    # the IPv6 PodCIDR size; unset: the agent's default (64)
    nodeCIDRMaskSizeIPv6: int | None = Field(default=None, ge=48, le=120)
    routingMode: Literal["overlay", "native"] = "overlay"
    tunnelProtocol: str = "vxlan"
    policy: dict[str, Any] = Field(default_factory=lambda: {"defaultDeny": False})
    serviceCIDR: str = "10.96.0.0/12"
    # Rules of this kube-proxy mode are installed in every node's netns from the lab's Services
    # (novanet_lab.kubeproxy); "none": no kube-proxy. Lab-only, never sent to the agents.
    kubeProxy: Literal["none", "iptables", "nftables"] = "none"

    @field_validator("clusterCIDR", mode="before")
    @classmethod
    def _cluster(cls, v: Any) -> str:
        return _cidrs(v)

    @field_validator("serviceCIDR", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> str:
        return _cidrs(v)

    @property
    def service_cidrs(self) -> list[str]:
        return ipfamily.split(self.serviceCIDR)

    @property
    def cluster_cidrs(self) -> list[str]:
        return ipfamily.split(self.clusterCIDR)

    @property
    def families(self) -> list[int]:
        return ipfamily.families(self.cluster_cidrs)

    def masks(self) -> dict[int, int]:
        return {4: self.nodeCIDRMaskSize, 6: self.nodeCIDRMaskSizeIPv6 or 64}

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

    @model_validator(mode="after")
    def _outside_default(self) -> LabSpec:
        if self.outside.address is None:
            self.outside.address = ipfamily.join(DEFAULT_OUTSIDE[f] for f in self.underlay.families)
        return self


def validate_lab_name(v: str) -> str:
    return _dns_label(v, MAX_LAB_NAME)


def _cidrs(v: Any) -> str:
    """One CIDR per family, the agent config's forms (novanet_core.ipfamily), canonical."""
    return ipfamily.join(ipfamily.parse_cidrs(v))


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
    clash = ipfamily.overlapping([ipaddress.ip_network(x) for x in c.service_cidrs],
                                 [ipaddress.ip_network(x) for x in c.cluster_cidrs])
    if clash:
        problems.append(f"cluster.serviceCIDR: {clash[0]} overlaps clusterCIDR {clash[1]}")
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
    ranges = [*spec.cluster.cluster_cidrs, *spec.cluster.service_cidrs]
    names = [*(["cluster.clusterCIDR"] * len(spec.cluster.cluster_cidrs)),
             *(["cluster.serviceCIDR"] * len(spec.cluster.service_cidrs))]
    families = spec.underlay.families
    for raw in ipfamily.split(o.address):
        addr = ipaddress.ip_address(raw)
        if addr.version not in families:
            problems.append(f"outside.address: {raw} is {ipfamily.family_name(addr.version)} but underlay.cidr "
                            f"{spec.underlay.cidr} has no {ipfamily.family_name(addr.version)} range, so no node "
                            "could route to it")
        for what, cidr in [*zip(names, ranges, strict=True), *(("underlay.cidr", u) for u in spec.underlay.cidrs)]:
            if addr in ipaddress.ip_network(cidr):
                problems.append(f"outside.address: {raw} is inside {what} {cidr}; it must be outside the cluster")
    if o.ip is not None:
        taken = {a for x in [*spec.nodes, *spec.routers] for a in ipfamily.split(x.ip)}
        for raw in ipfamily.split(o.ip):
            net = ipfamily.pick(spec.underlay.cidrs, ipfamily.family_of(raw))
            if net is None or ipaddress.ip_address(raw) not in ipaddress.ip_network(net):
                problems.append(f"outside.ip: {raw} is not in underlay.cidr {spec.underlay.cidr}")
            if raw in taken:
                problems.append(f"outside.ip: {raw} is already used by a node or router")
    return problems


def _check_routers(spec: LabSpec, nodes: dict[str, int]) -> list[str]:
    problems = []
    if spec.routers and spec.cluster.routingMode != "native":
        problems.append("routers: need cluster.routingMode: native")
    elif spec.routers and not podroutes.uses_frr(spec):
        problems.append(f"routers: they speak BGP, so they need a routing backend the lab runs FRR for "
                        f"(cluster.routing.type: {', '.join(podroutes.FRR_BACKENDS)}), not "
                        f"{podroutes.routing_type(spec)!r}")
    if spec.routers and 4 not in spec.underlay.families:
        problems.append(f"routers: need an IPv4 range in underlay.cidr ({spec.underlay.cidr}): the lab's routers "
                        "speak BGP over IPv4")
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
    from novanet_lab.addressing import AddressError, assign_node_ips_by_family, carve_pod_cidrs_by_family

    problems = []
    c = spec.cluster
    try:
        carve_pod_cidrs_by_family(c.clusterCIDR, c.masks(), [(n.name, n.podCIDR) for n in spec.nodes])
    except AddressError as e:
        problems.append(str(e))
    try:
        assign_node_ips_by_family(spec.underlay.cidr, [(n.name, n.ip) for n in spec.nodes])
    except AddressError as e:
        problems.append(str(e))
    assert spec.underlay.cidr is not None
    underlay = [ipaddress.ip_network(u) for u in spec.underlay.cidrs]
    clash = ipfamily.overlapping(underlay, [ipaddress.ip_network(x) for x in c.cluster_cidrs])
    if clash:
        problems.append(f"underlay.cidr: {clash[0]} overlaps cluster.clusterCIDR {clash[1]}")
    clash = ipfamily.overlapping(underlay, [ipaddress.ip_network(x) for x in c.service_cidrs])
    if clash:
        problems.append(f"underlay.cidr: {clash[0]} overlaps cluster.serviceCIDR {clash[1]}")
    return problems
