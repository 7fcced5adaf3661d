"""Backend protocols and the registry plugins fill through ``novanet_register_backends``.

A backend is the object a plugin hands the core once it has been *selected by config*. The core
calls it through these protocols only; everything backend-specific (netlink work, BPF programs,
FRR) stays behind them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    Underlay,
)

if TYPE_CHECKING:
    from novanet_core.config.models import NovaNetConfig
    from novanet_core.policy import EndpointPolicy
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
    """What a backend factory gets: the config, where this process lives, and the node's facts.

    The agent works the facts out once (``novanet_core.agent.node``) before it creates the
    ipam, tunnel and routing backends; the state source is created before them (it is where the
    node's facts come from) and the dataplane's datapath gets none of them (it is told the
    node's settings through ``configure``).
    """

    config: NovaNetConfig
    component: str  # "agent" or "dataplane"
    node: NodeInfo | None = None
    underlay: Underlay | None = None
    underlay_problem: str = ""  # why ``underlay`` is None, naming the config key
    extras: dict[str, Any] = field(default_factory=dict)

    def require_underlay(self) -> Underlay:
        """The underlay, or a ConfigError saying why it is not known."""
        if self.underlay is None:
            raise ConfigError(self.underlay_problem or f"underlayInterface: not resolved in the {self.component}")
        return self.underlay

    def pod_mtu(self, overhead: int = 0) -> int:
        """The pod interface MTU: ``mtu`` when set, else the underlay's (1500 when it is not known)
        minus ``overhead``, the bytes an encapsulation adds."""
        if isinstance(self.config.mtu, int):
            return self.config.mtu
        return (self.underlay.mtu if self.underlay is not None else 1500) - overhead


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
    """Hands out pod addresses from this node's PodCIDR; state must survive restarts.

    The agent calls it from concurrent ADDs (different attachments, different threads) without a
    lock of its own: each operation must be atomic by itself (host-local holds its store's lock
    for each one)."""

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
    """Moves packets between endpoints. Lives in the ``novanet-dataplane`` process.

    These methods every datapath has. Everything else a datapath may do comes in *sections*
    (policy, flows, service): a protocol each, below, listed in :data:`DATAPATH_SECTIONS`. A
    datapath names the sections it implements in ``capabilities``; ``PluginHost.create`` checks
    that it has every method of those, and the dataplane host answers a section's API methods
    with ``unsupported`` for a datapath that does not. See docs/plugin-authoring.md.
    """

    name: str
    capabilities: frozenset[str]  # names of the sections it implements (keys of DATAPATH_SECTIONS)
    # Optional, here and on tunnel/routing backends: ``ip_families``, the IP families (4, 6) it
    # carries; absent means (4,). The agent refuses PodCIDRs of a family a backend lacks.

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


@runtime_checkable
class PolicyDatapath(Protocol):
    """Section ``policy``: enforce compiled NetworkPolicy (``dp.policy.*``; docs/policy.md)."""

    def apply_policy(self, upserts: Sequence[EndpointPolicy], deletes: Sequence[str] = (),
                     full: bool = False) -> dict[str, Any]:
        """Program the endpoints' compiled policy (``EndpointPolicy.ip`` set), drop ``deletes``
        (IPs); ``full`` replaces everything. Must be in force when it returns (flows decided
        under the old policy re-decide). Returns counters of what was written."""

    def list_policy(self) -> dict[str, Any]:
        """The policy as the live datapath holds it (decoded maps), not a cached copy."""


@runtime_checkable
class FlowDatapath(Protocol):
    """Section ``flows``: flow and drop events (``dp.flows``)."""

    def flow_events(self, identity: int = 0, drops_only: bool = False, follow: bool = False,
                    limit: int = 100, filter: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The last ``limit`` events (of ``identity`` when not 0), then new ones with ``follow``.
        A drop carries ``drop_reason_name``; a policy drop also ``policy_reason`` and ``policies``.
        ``filter``: Hubble-style fields (``from_pod``, ``namespace``, ``port``, ``verdict``, ...;
        the ebpf datapath's are in docs/datapath.md), all of which must match; a field the datapath
        does not know is an error (ValueError naming it), never ignored."""


@runtime_checkable
class ServiceDatapath(Protocol):
    """Section ``service``: Service load-balancing (``dp.service.*``; docs/services.md).

    The agent resolves every per-node semantic first: a frontend arrives with its final backend
    list. A datapath without a load-balancer raises DatapathUnsupported from upsert_service
    (kube-proxy then owns translation).
    """

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
class PrewarmDatapath(Protocol):
    """Section ``prewarm``: programs attached to host veths before they have an endpoint, so
    that the agent's warm pool (``warmPool``) takes the attach cost off the CNI ADD path
    (``dp.prewarm.*``; docs/cni.md). Only for programs that hold no per-pod state: who a packet
    belongs to comes from the maps the ADD writes."""

    def prewarm_interface(self, host_ifname: str) -> None:
        """Attach the programs to the (pooled) host veth ``host_ifname``; idempotent."""

    def release_interface(self, host_ifname: str) -> None:
        """Detach them again (the pool deletes the member); idempotent."""

    def adopt_interface(self, pooled_ifname: str, host_ifname: str) -> None:
        """The pooled interface was renamed ``host_ifname`` for a new endpoint: its attachment
        follows the new name (called by ``dp.endpoint.add`` before the endpoint is written)."""


@runtime_checkable
class StatsDatapath(Protocol):
    """Section ``stats``: what the datapath counted (``dp.stats``; ``novanetctl metrics``)."""

    def datapath_stats(self) -> dict[str, Any]:
        """``{"traffic": {direction: {FORWARDED|<drop reason>|NEW_FLOW: {packets, bytes}}},
        "flow_events": {submitted, lost, consumed, ...}, "maps": [{name, entries, max_entries}],
        "egress_rules": int}``; a datapath returns the keys it has."""


# Section name -> its protocol. A new section is one protocol here, its dp.<section>.* methods in
# novanet_core.dataplane.service, and a row in docs/plugin-authoring.md.
DATAPATH_SECTIONS: dict[str, type] = {
    "policy": PolicyDatapath,
    "flows": FlowDatapath,
    "service": ServiceDatapath,
    "prewarm": PrewarmDatapath,
    "stats": StatsDatapath,
}


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


# --------------------------------------------------------------------------- checking a backend

KIND_PROTOCOLS: dict[str, type] = {
    "ipam": IpamBackend,
    "datapath": DatapathBackend,
    "tunnel": TunnelBackend,
    "routing": RoutingBackend,
    "state-source": StateSource,
}


def protocol_members(proto: type) -> list[str]:
    """The attributes and methods a protocol class declares (its own, not ``Protocol``'s)."""
    names = set(getattr(proto, "__annotations__", {}))
    names |= {n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")}
    return sorted(names)


def missing_members(proto: type, obj: Any) -> list[str]:
    """What ``obj`` lacks of ``proto``: absent names, and methods that are not callable."""
    out = []
    for n in protocol_members(proto):
        declared = vars(proto).get(n)
        if not hasattr(obj, n):
            out.append(n)
        elif callable(declared) and not callable(getattr(obj, n)):
            out.append(f"{n} (not callable)")
    return out


def backend_problems(kind: str, obj: Any) -> list[str]:
    """Why ``obj`` does not satisfy the protocol of ``kind`` (empty when it does).

    A datapath is also checked section by section: each name in ``capabilities`` must be a
    known section whose every method the object has.
    """
    proto = KIND_PROTOCOLS[kind]
    problems = []
    missing = missing_members(proto, obj)
    if missing:
        problems.append(f"{proto.__name__} needs {', '.join(missing)}")
    if kind == "datapath" and "capabilities" not in missing:
        caps = obj.capabilities
        if not isinstance(caps, frozenset | set) or not all(isinstance(c, str) for c in caps):
            problems.append(f"capabilities must be a set of section names, not {caps!r}")
            return problems
        for section in sorted(caps):
            sproto = DATAPATH_SECTIONS.get(section)
            if sproto is None:
                problems.append(f"capabilities: unknown section {section!r} "
                                f"(known: {', '.join(sorted(DATAPATH_SECTIONS))})")
                continue
            missing = missing_members(sproto, obj)
            if missing:
                problems.append(f"section {section!r} ({sproto.__name__}) needs {', '.join(missing)}")
    return problems
