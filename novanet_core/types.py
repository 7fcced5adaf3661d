"""Plain data types shared by the core and plugins (no behaviour, no heavy imports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from novanet_core.ipfamily import family_of, pick
from novanet_core.protocols import L4_PROTOCOLS

# Reserved security identities (same numbers as the original NovaNet: 0 = wildcard in rules).
IDENTITY_WILDCARD = 0
IDENTITY_HOST = 1
IDENTITY_WORLD = 2
# First identity handed out for a (namespace, labels) set.
IDENTITY_USER_MIN = 256


@dataclass(frozen=True)
class Attachment:
    """A CNI attachment: what ``cni.dev/valid-attachments`` lists."""

    container_id: str
    ifname: str


@dataclass
class IpamRequest:
    container_id: str
    ifname: str
    namespace: str = ""
    pod: str = ""
    # Ask for this exact address (restart reconcile, tests); the backend may refuse.
    address: str | None = None


@dataclass
class IpamAddress:
    """One family's address of an allocation."""

    address: str  # bare IP, e.g. "10.42.0.5" or "fd00:42::5"
    prefix_len: int  # of the pool, e.g. 24 or 64
    gateway: str


@dataclass
class IpamAllocation:
    """The addresses an IPAM backend handed out to one attachment: one per family of the node's
    pools. ``address``/``prefix_len``/``gateway`` are the primary family's (``addresses[0]``); a
    backend that only sets those is read as single-stack."""

    container_id: str
    ifname: str
    address: str  # bare IP, e.g. "10.42.0.5"
    prefix_len: int  # of the pool, e.g. 24
    gateway: str
    addresses: list[IpamAddress] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.addresses = [a if isinstance(a, IpamAddress) else IpamAddress(**a) for a in self.addresses]
        if not self.addresses:
            self.addresses = [IpamAddress(self.address, self.prefix_len, self.gateway)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Endpoint:
    """A pod interface on this node, as the agent and datapath know it."""

    container_id: str
    ifname: str
    namespace: str
    pod: str
    netns: str
    ip: str
    mac: str  # pod-side MAC
    host_ifname: str
    host_ifindex: int
    host_mac: str
    gateway: str
    mtu: int
    identity: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    node_ip: str = ""
    # Every address of the interface, one per family, ``ip`` first, and the gateway of each (in
    # the same order): one endpoint, one identity, whatever the number of families. Records and
    # requests without them are single-stack.
    ips: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    # The CNI bandwidth capability's limits (bit/s, 0 = none; novanet_core.cni.bandwidth): the
    # chained bandwidth plugin shapes, a datapath that forwards past the kernel's qdiscs must not.
    ingress_rate: int = 0
    egress_rate: int = 0

    def __post_init__(self) -> None:
        if not self.ips:
            self.ips = [self.ip]
        if not self.gateways:
            self.gateways = [self.gateway]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})

    def ip_of(self, family: int) -> str | None:
        return pick(self.ips, family)

    def gateway_of(self, family: int) -> str | None:
        return next((g for a, g in zip(self.ips, self.gateways, strict=False) if family_of(a) == family),
                    None)


@dataclass
class RemoteEndpoint:
    """A pod on another node: enough for cross-node identity and delivery."""

    ip: str
    identity: int
    node_ip: str
    namespace: str = ""
    pod: str = ""


@dataclass
class NodeInfo:
    """A node: ``ip`` and ``pod_cidr`` are its primary family's; ``ips`` and ``pod_cidrs`` hold
    one per family (dual-stack), primary first (filled from the single values when not given)."""

    name: str
    ip: str
    pod_cidr: str
    pod_cidrs: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.pod_cidrs and self.pod_cidr:
            self.pod_cidrs = [self.pod_cidr]
        if not self.ips and self.ip:
            self.ips = [self.ip]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pod_cidr_of(self, family: int) -> str | None:
        return pick(self.pod_cidrs, family)

    def ip_of(self, family: int) -> str | None:
        return pick(self.ips, family)


@dataclass(frozen=True)
class Underlay:
    """The interface that carries this node's IP (``underlayInterface``, else the one holding it)."""

    name: str
    ifindex: int
    mtu: int


# --------------------------------------------------------------------------- Services
# What the agent sends the datapath for Kubernetes Services: final, per-node lists. Every
# Kubernetes semantic that depends on the node (traffic policies, named target ports, which
# endpoints are local) is resolved by the agent (novanet_core.services) before it gets here, so a
# datapath backend only translates and picks.

SERVICE_PROTOCOLS = L4_PROTOCOLS
FRONTEND_KINDS = ("ClusterIP", "NodePort")


@dataclass
class ServiceBackend:
    """One backend (pod IP and the resolved target port) of a frontend."""

    ip: str
    port: int
    node_name: str = ""
    local: bool = False  # the backend pod runs on this node
    ready: bool = True
    serving: bool = True
    # Terminating endpoints take no new connections; they stay listed so that the connections
    # already going to them can finish.
    terminating: bool = False
    # Of the frontend this backend belongs to; what set_service_backends keys on.
    protocol: str = "TCP"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceBackend:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def selectable(self) -> bool:
        """May a new connection pick this backend?"""
        return self.ready and not self.terminating


@dataclass
class ServiceFrontend:
    """One address:port/protocol a Service answers on, on this node, with its backends."""

    key: str  # "<namespace>/<name>:<portName or port>/<PROTO>[/nodeport][/IPv6]", unique per frontend
    namespace: str
    name: str
    port_name: str
    protocol: str  # "TCP" | "UDP" | "SCTP"
    ip: str  # the ClusterIP, or this node's IP for kind "NodePort" (backends are of the same family)
    port: int  # the Service port, or the nodePort for kind "NodePort"
    kind: str  # "ClusterIP" | "NodePort"
    backends: list[ServiceBackend] = field(default_factory=list)
    affinity_timeout: int = 0  # seconds; 0 = no sessionAffinity
    # NodePort with externalTrafficPolicy: Local: backends are node-local only and the client's
    # source address must be kept (no SNAT on the way in).
    external_local: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceFrontend:
        names = cls.__dataclass_fields__.keys()
        kw = {k: v for k, v in d.items() if k in names}
        kw["backends"] = [b if isinstance(b, ServiceBackend) else ServiceBackend.from_dict(b)
                          for b in kw.get("backends") or []]
        return cls(**kw)


def frontend_key(namespace: str, name: str, port_name: str, port: int, protocol: str, nodeport: bool) -> str:
    """The key of one frontend; the port's name when it has one, else its number."""
    key = f"{namespace}/{name}:{port_name or port}/{protocol}"
    return key + "/nodeport" if nodeport else key
