"""Backend protocols and the registry plugins fill through ``novanet_register_backends``.

A backend is the object a plugin hands the core once it has been *selected by config*. The core
calls it through these protocols only; everything backend-specific (netlink work, BPF programs,
FRR) stays behind them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from novanet_core.types import (
    Attachment,
    Endpoint,
    IpamAllocation,
    IpamRequest,
    NodeInfo,
    RemoteEndpoint,
    ServiceBackend,
    ServiceFrontend,
)

if TYPE_CHECKING:
    from novanet_core.config.models import NovaNetConfig
    from novanet_core.state.model import ClusterState, StateEvent

BACKEND_KINDS = ("ipam", "datapath", "tunnel", "routing", "state-source")

# The config key that selects each kind; used in error messages.
SELECTOR_KEYS = {
    "ipam": "ipam.type",
    "datapath": "datapath",
    "tunnel": "tunnelProtocol",
    "routing": "routing.type",
    "state-source": "stateSource.type",
}


class ConfigError(Exception):
    """Bad configuration; the message names the config key."""


class DatapathUnsupported(Exception):
    """The active datapath does not implement this part of the contract (the message says what
    to use instead); the dataplane API answers it with error code ``unsupported``."""


@dataclass
class BackendContext:
    """What a backend factory gets: the config and where this process lives."""

    config: NovaNetConfig
    component: str  # "agent" or "dataplane"
    node: NodeInfo | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendEntry:
    kind: str
    name: str
    factory: Callable[[BackendContext], Any]
    plugin: str
    description: str = ""


class BackendRegistry:
    """Collects ``(kind, name) -> factory`` from every plugin; detects conflicts."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], BackendEntry] = {}
        self.conflicts: list[str] = []
        self.current_plugin = "?"

    def add(self, kind: str, name: str, factory: Callable[[BackendContext], Any], description: str = "") -> None:
        if kind not in BACKEND_KINDS:
            raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(BACKEND_KINDS)}")
        key = (kind, name)
        if key in self._entries and self._entries[key].plugin != self.current_plugin:
            self.conflicts.append(
                f"{SELECTOR_KEYS[kind]}={name!r} is provided by both plugin "
                f"{self._entries[key].plugin!r} and plugin {self.current_plugin!r}"
            )
            return
        self._entries[key] = BackendEntry(kind, name, factory, self.current_plugin, description)

    def get(self, kind: str, name: str) -> BackendEntry | None:
        return self._entries.get((kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, n) in self._entries if k == kind)

    def entries(self) -> list[BackendEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.kind, e.name))


# --------------------------------------------------------------------------- protocols


class IpamError(Exception):
    """An IPAM failure the CNI reports as a plugin error (code >= 100)."""

    def __init__(self, msg: str, code: int = 100):
        super().__init__(msg)
        self.code = code


class PoolExhausted(IpamError):
    def __init__(self, msg: str):
        super().__init__(msg, code=110)


@runtime_checkable
class IpamBackend(Protocol):
    """Hands out pod addresses from this node's PodCIDR; state must survive restarts."""

    def allocate(self, request: IpamRequest) -> IpamAllocation:
        """Allocate (or return the existing) address for ``(container_id, ifname)``."""

    def release(self, container_id: str, ifname: str) -> list[str]:
        """Release every address of the attachment; return them. Idempotent."""

    def get(self, container_id: str, ifname: str) -> IpamAllocation | None: ...

    def list(self) -> list[IpamAllocation]: ...

    def gc(self, valid: Iterable[Attachment]) -> list[IpamAllocation]:
        """Release allocations whose attachment is not in ``valid``; return what was released."""

    def status(self) -> dict[str, Any]:
        """At least ``{"ready": bool, "capacity": int, "allocated": int}``."""


@runtime_checkable
class DatapathBackend(Protocol):
    """Moves packets between endpoints. Lives in the ``novanet-dataplane`` process."""

    name: str

    def start(self) -> None:
        """Load or re-open programs and maps; must not disturb traffic of existing endpoints."""

    def stop(self) -> None:
        """Release process resources. Pinned state stays: traffic keeps flowing."""

    def configure(self, settings: dict[str, Any]) -> None:
        """Node settings: node IP, PodCIDR, cluster CIDR, gateway, mode, default-deny..."""

    def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Make a local endpoint reachable (attach programs to its host veth)."""

    def delete_endpoint(self, ip: str, host_ifname: str | None = None) -> None: ...

    def upsert_remote(self, remote: RemoteEndpoint) -> None: ...

    def delete_remote(self, ip: str) -> None: ...

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Endpoints as the live datapath holds them (maps or routes), not a cached copy."""

    def status(self) -> dict[str, Any]: ...

    # -- Services (docs/services.md). The agent resolves every per-node semantic first: a
    # frontend arrives with its final backend list. A datapath without a load-balancer raises
    # DatapathUnsupported from upsert_service (kube-proxy then owns translation).

    def upsert_service(self, frontend: ServiceFrontend) -> None:
        """Create or replace one frontend (``frontend.key``) and its backends."""

    def delete_service(self, key: str) -> None:
        """Remove one frontend; idempotent."""

    def list_services(self) -> list[dict[str, Any]]:
        """Frontends as the live datapath holds them: ``ServiceFrontend.to_dict()`` shapes."""

    def set_service_backends(self, backends: list[ServiceBackend]) -> None:
        """kube-proxy compatibility (``kubeProxyReplacement: false``): the full set of Service
        backends (ip, port, protocol) on any node. Replies from these addresses must pass the
        kernel's conntrack (kube-proxy's DNAT is reversed there) instead of bypassing the stack."""


@runtime_checkable
class TunnelBackend(Protocol):
    """Overlay encapsulation between nodes."""

    name: str
    overhead: int  # bytes the encapsulation adds to every packet (for MTU = underlay - overhead)

    def setup(self, local: NodeInfo) -> None: ...

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None: ...

    def teardown(self) -> None: ...

    def status(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class RoutingBackend(Protocol):
    """Native routing: advertise the local PodCIDR, learn the others."""

    name: str

    def start(self, local: NodeInfo) -> None: ...

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None: ...

    def stop(self, withdraw: bool) -> None: ...

    def status(self) -> dict[str, Any]: ...


@runtime_checkable
class StateSource(Protocol):
    """Feeds the agent nodes, namespaces, pods and NetworkPolicies; the agent does not care which."""

    def snapshot(self) -> ClusterState: ...

    def watch(self, stop: threading.Event) -> Iterator[StateEvent]:
        """Yield changes after the last snapshot until ``stop`` is set."""
