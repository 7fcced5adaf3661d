"""Plain data types shared by the core and plugins (no behaviour, no heavy imports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
class IpamAllocation:
    """An address handed out by an IPAM backend."""

    container_id: str
    ifname: str
    address: str  # bare IP, e.g. "10.42.0.5"
    prefix_len: int  # of the pool, e.g. 24
    gateway: str

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


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
    name: str
    ip: str
    pod_cidr: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
