"""A tunnel backend whose encapsulation is BPF behind the datapath's tunnel hook, with everything
but what differs between tunnels done here (flannel's ``RouteNetwork`` idea: its host-gw and ipip
backends embed it and supply a callback).

A plugin subclasses :class:`BpfTunnel`, sets ``name``, ``overhead`` and ``programs`` (a
:class:`~novanet_core.bpf.tunnel.programs.TunnelPrograms`) and overrides only the hooks whose
default does not fit it:

* :meth:`attach_device`: where the ingress program sits and encapsulated packets leave (default:
  the underlay interface);
* :meth:`tunnel_entry`: the shared ``tunnels`` entry of a remote node (default: via that device,
  VNI 0);
* :meth:`write_nodes` / :meth:`forget_node`: the plugin's own per-node map entries (default: none);
* :meth:`sync_routes`: kernel routes to remote PodCIDRs (default: straight over the underlay with
  the tunnel MTU, see :mod:`~novanet_core.bpf.tunnel.routes`);
* :meth:`remove_device`, :meth:`status_row`, :meth:`counters`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from novanet_core import netlink
from novanet_core.backend_hooks import BackendHooks, backend_hooks
from novanet_core.backends import BackendContext
from novanet_core.bpf.layouts import TunnelValue
from novanet_core.bpf.tunnel import entries, routes
from novanet_core.bpf.tunnel.programs import TunnelPrograms
from novanet_core.config.models import NovaNetConfig
from novanet_core.ipfamily import family_of
from novanet_core.types import NodeInfo

log = logging.getLogger(__name__)


# An outer IPv6 header is 40 bytes, IPv4's 20 (no options on either).
IPV6_EXTRA = 20


class BpfTunnel:
    name: ClassVar[str]
    # bytes the encapsulation adds over an IPv4 underlay; an instance's ``overhead`` is that of
    # its underlay family (pod MTU = underlay MTU - overhead)
    overhead: int
    programs: ClassVar[TunnelPrograms]

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        # The underlay family is the node's primary address's (nodeIP's first entry, else the
        # Node's first InternalIP): that is the address other nodes tunnel to (the agent's
        # remote endpoints carry the primary address too). A dual-stack node is on the family
        # it lists first.
        self.family = family_of(ctx.node.ip) if ctx.node is not None else 4
        self.overhead = type(self).overhead + (IPV6_EXTRA if self.family == 6 else 0)
        self.root = ctx.config.bpf.root
        self.bpf = True  # False: this backend runs without programs (a plugin's routes-only mode)
        self.local: NodeInfo | None = None
        self.remotes: list[NodeInfo] = []
        self.device = ""  # attach_device(): the ingress program's device
        self.ifindex = 0
        self.underlay = ""  # the interface holding the node IP, and its MTU
        self.underlay_ifindex = 0
        self.underlay_mtu = 0
        self.nexthops: dict[str, str] = {}  # remote node IP -> underlay next hop
        self.installed: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what a plugin may override
    def attach_device(self, local: NodeInfo) -> tuple[str, int]:
        return self.underlay, self.underlay_ifindex

    def tunnel_entry(self, node: NodeInfo) -> TunnelValue:
        return entries.tunnel_value(self.ifindex, node.ip, 0)

    def write_nodes(self, remotes: list[NodeInfo]) -> None:
        """The plugin's own per-node entries, written before the shared ones (the datapath
        tail-calls only once those exist); ``self.nexthops`` is up to date."""

    def forget_node(self, node_ip: str) -> None:
        """After the node's shared entry was deleted."""

    def sync_routes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        # The PodCIDRs of the underlay's family, and on a dual-stack underlay (the node has an
        # address of the other family) the other family's too, each via the remote node's address
        # of its family: a route cannot take a next hop of the other family. These carry what the
        # node's stack forwards (e.g. a pod's connection kube-proxy DNATed): without the other
        # family's, such IPv6 traffic would leave by the default route.
        with netlink.IPRoute() as ipr:
            for family in (4, 6):
                if family != self.family and not local.ip_of(family):
                    continue
                want = {c: self.nexthops.get(ip, ip) for n in remotes
                        if (c := n.pod_cidr_of(family)) and (ip := n.ip_of(family))}
                routes.sync_underlay_routes(ipr, self.underlay_ifindex, self.tunnel_mtu, want, self.name, family)

    def remove_device(self) -> None:
        """On teardown, after the programs are gone."""
        with netlink.IPRoute() as ipr:
            for family in (4, 6):
                routes.sync_underlay_routes(ipr, self.underlay_ifindex, self.tunnel_mtu, {}, self.name, family)

    def status_row(self, node: NodeInfo) -> dict[str, Any]:
        """Plugin fields of the node's ``novanetctl tunnels`` row."""
        return {}

    @classmethod
    def plugin_hooks(cls, *, description: str,
                     config_errors: Callable[[NovaNetConfig], list[str]] | None = None) -> BackendHooks:
        """A tunnel plugin's ``novanet_register_backends``, ``novanet_validate_config`` and
        ``novanet_register_api`` (``<name>.status`` in the agent, when the agent's tunnel backend
        is one of ``cls``)."""
        return backend_hooks("tunnel", cls.name, cls, description=description, config_errors=config_errors,
                             api={f"{cls.name}.status": (cls.api_status,
                                                         f"{cls.name}: device, programs, per-event packet counters, tunnels")})

    def counters(self) -> dict[str, Any]:
        """The plugin's ``<name>.status`` API answer, besides ``tunnels``."""
        return {"underlay": self.underlay, "ifindex": self.ifindex, "programs": self.installed,
                "counters": self.programs.counters(self.root) if self.bpf else {}}

    # ------------------------------------------------------------------ facts
    @property
    def tunnel_mtu(self) -> int:
        """The largest inner packet the underlay carries encapsulated."""
        return self.underlay_mtu - self.overhead

    @property
    def pod_mtu(self) -> int:
        return self.ctx.pod_mtu(self.overhead)

    def _resolve_underlay(self, local: NodeInfo) -> None:
        u = self.ctx.require_underlay()  # worked out once by the agent (novanet_core.agent.node)
        self.underlay, self.underlay_ifindex, self.underlay_mtu = u.name, u.ifindex, u.mtu

    # ------------------------------------------------------------------ TunnelBackend
    def setup(self, local: NodeInfo) -> None:
        self.local = local
        self._resolve_underlay(local)
        self.device, self.ifindex = self.attach_device(local)
        if self.bpf:
            self.installed = self.programs.setup(self.root, self.ctx.config.bpf.headerTree, self.device,
                                                 self.ifindex)
        log.info("%s: ready on %s (ifindex %d, underlay %s MTU %d, pod MTU %d, programs %s)", self.name,
                 self.device, self.ifindex, self.underlay, self.underlay_mtu, self.pod_mtu,
                 self.installed or "none")

    def reachable(self, remotes: list[NodeInfo]) -> list[NodeInfo]:
        """The remotes this node can tunnel to: their address (the primary one, which their pods
        are reached through) of this underlay's family, with a node key no other node has."""
        ok = []
        for n in remotes:
            if family_of(n.ip) != self.family:
                log.error("%s: node %s has the %s address %s first, but this node's underlay is IPv%d; no "
                          "tunnel to it (every node must list the same family first in nodeIP / its "
                          "InternalIPs)", self.name, n.name, "IPv6" if ":" in n.ip else "IPv4", n.ip, self.family)
                continue
            ok.append(n)
        local_ip = self.local.ip if self.local is not None else ""
        clash = entries.key_collisions([local_ip, *(n.ip for n in ok)] if local_ip else [n.ip for n in ok])
        for ip, other in clash.items():
            log.error("%s: node address %s has the same node key as %s; no tunnel to it", self.name, ip, other)
        return [n for n in ok if n.ip not in clash]

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        remotes = self.reachable(remotes)
        with self._lock:
            self.nexthops = routes.nexthops(n.ip for n in remotes)
            if self.bpf:
                self.write_nodes(remotes)
                for ip in entries.sync_tunnels(self.root, {n.ip: self.tunnel_entry(n) for n in remotes}):
                    self.forget_node(ip)
            self.sync_routes(local, remotes)
            self.remotes = sorted(remotes, key=lambda n: n.name)

    def teardown(self) -> None:
        with self._lock:
            if self.bpf:
                for ip in entries.sync_tunnels(self.root, {}):
                    self.forget_node(ip)
                self.programs.uninstall(self.root)
            self.remove_device()

    def status(self) -> list[dict[str, Any]]:
        return [{"node": n.name, "nodeIP": n.ip, "podCIDR": n.pod_cidr, "interface": self.device,
                 "ifindex": self.ifindex, "protocol": self.name, **self.status_row(n), "overhead": self.overhead}
                for n in self.remotes]

    def api_status(self) -> dict[str, Any]:
        return {**self.counters(), "tunnels": self.status()}
