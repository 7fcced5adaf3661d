"""The agent: turns cluster state and CNI requests into endpoints, identities and datapath state.

This module builds the parts and runs their life cycle; each part is a module of its own:
:mod:`.node` works out the node's facts once; :mod:`.pods` holds this node's endpoints as units;
:mod:`.cni` serves the CNI verbs; :mod:`.remotes` keeps the other nodes and their pods in the
tunnel/routing backend and the datapath; :mod:`.reconcile` fixes differences between the live
node and the records; :mod:`.watchdog` re-pushes everything when the dataplane comes back;
:mod:`.policy_sync` and :mod:`novanet_core.services.sync` program policy and Services. The agent
holds the node's one :class:`ClusterState`; only :meth:`Agent.apply_event` writes it, then tells
each part what changed.

Threads: the API servers (one thread per connection), the state watcher, and the dataplane
watchdog. A single re-entrant lock serialises endpoint changes; netlink work per pod takes a few
milliseconds, so serialising keeps ADD/DEL/label updates simple without costing throughput.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from typing import Any

from novanet_core import __version__
from novanet_core.agent import families, masquerade, node, rtprotos, warmpool
from novanet_core.agent.cni import CniVerbs
from novanet_core.agent.cni_stats import CniStats
from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.agent.endpoints import EndpointStore
from novanet_core.agent.pods import LocalEndpoints
from novanet_core.agent.policy_sync import PolicySync
from novanet_core.agent.reconcile import Reconciler
from novanet_core.agent.remotes import NodeSync
from novanet_core.agent.watchdog import DataplaneWatchdog
from novanet_core.backends import BackendContext, ConfigError
from novanet_core.config.models import NovaNetConfig
from novanet_core.identity import IdentityAllocator
from novanet_core.plugins.manager import PluginHost
from novanet_core.services.sync import ServiceSync
from novanet_core.state.model import ClusterState, StateEvent

log = logging.getLogger("novanet.agent")


class Agent:
    def __init__(self, config: NovaNetConfig, host: PluginHost):
        self.config = config
        self.host = host
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.ready = False
        self.state_version = 0
        self.started_at = time.time()
        self.identities = IdentityAllocator()
        self.store = EndpointStore(config.state_dir)
        self.dataplane = DataplaneClient(config.sockets.dataplane)
        self.source = host.create("state-source", BackendContext(config=config, component="agent"))
        self.state: ClusterState = self._first_snapshot()
        self.state_version = self.state.version
        self.node = node.resolve_node(config, self.state, lambda: host.pm.hook.novanet_node_ip(config=config))
        underlay, why = node.resolve_underlay(config, self.node.ip)
        ctx = BackendContext(config=config, component="agent", node=self.node, underlay=underlay,
                             underlay_problem=why)
        self.ipam = host.create("ipam", ctx)
        self.tunnel = host.create("tunnel", ctx) if config.routingMode == "overlay" else None
        self.routing = host.create("routing", ctx) if config.routingMode == "native" else None
        # The backends this process created, by kind: the register hooks hand them to their plugins.
        self.backends: dict[str, Any] = {"state-source": self.source, "ipam": self.ipam}
        self.backends.update({k: b for k, b in (("tunnel", self.tunnel), ("routing", self.routing)) if b is not None})
        # The gateway of every family: the first address of its PodCIDR (primary first).
        self.gateways = [str(ipaddress.ip_network(c).network_address + 1) for c in self.node.pod_cidrs]
        self.gateway = self.gateways[0]
        self.mtu = ctx.pod_mtu(self.tunnel.overhead if self.tunnel is not None else 0)
        self.pool: warmpool.WarmPool | None = None  # started in start(), once the dataplane answered
        self.families_error: str | None = None  # set while a backend cannot carry a family of the node's
        # NetworkPolicy: compiler + datapath sync (policy_sync.py)
        self.policy = PolicySync(self.state, self.store, self.identities, self.dataplane, self.node.name,
                                 config.policy.defaultDeny)
        # Services: per-node frontends + datapath sync (novanet_core.services)
        self.services = ServiceSync(self.state, self.dataplane, self.node, config.kubeProxyReplacement)
        self.nodes = NodeSync(self.state, self.node, config.routingMode, self.identities, self.dataplane, self.tunnel,
                              self.routing, lambda local, remotes: host.hook.novanet_nodes_changed(local=local, remotes=remotes))
        self.endpoints = LocalEndpoints(self.state, self.store, self.ipam, self.identities, self.dataplane,
                                        self.policy)
        self.cni = CniVerbs(self.lock, self.node, self.mtu, self.endpoints, self.ipam, self.dataplane, host.hook,
                            lambda: self.ready, lambda: self.pool, lambda: self.families_error)
        self.reconciler = Reconciler(self.lock, self.endpoints, self.ipam, self.dataplane, self.nodes,
                                     self._resync_settings, self.cni.in_flight)
        self.watchdog = DataplaneWatchdog(self.dataplane, self.stop_event, self._resync_dataplane)
        # (kind, seconds) of recent state events, source event in to everything applied (state.timings).
        self.event_timings: collections.deque[tuple[str, float]] = collections.deque(maxlen=5000)
        self.cni_stats = CniStats()  # fed by the CNI socket's handlers (api_methods), read by metrics
        self.api_servers: dict[str, Any] = {}  # socket name -> ApiServer, set by main (limits, refusals)

    def _first_snapshot(self) -> ClusterState:
        # A node agent waits for its state source (an API server still starting, say) rather than
        # crash-looping; the CNI meanwhile answers "try again later".
        delay = 0.5
        while True:
            try:
                return self.source.snapshot()
            except Exception as e:
                log.error("state source %s not available (%s: %s); retrying in %.1f s",
                          self.config.stateSource.type, type(e).__name__, str(e).splitlines()[0][:300], delay)
                if self.stop_event.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)

    def datapath_settings(self) -> dict[str, Any]:
        # The single keys are the primary family's (what a single-stack datapath reads); the
        # list keys hold one entry per family, primary first.
        return {
            "nodeIP": self.node.ip,
            "nodeName": self.node.name,
            "podCIDR": self.node.pod_cidr,
            "clusterCIDR": self.config.cluster_cidrs[0],
            "gateway": self.gateway,
            "nodeIPs": list(self.node.ips),
            "podCIDRs": list(self.node.pod_cidrs),
            "clusterCIDRs": self.config.cluster_cidrs,
            "gateways": list(self.gateways),
            "routingMode": self.config.routingMode,
            "tunnelProtocol": self.config.tunnelProtocol,
            "defaultDeny": self.config.policy.defaultDeny,
            "masquerade": self.config.egress.masqueradeEnabled,
            "mtu": self.mtu,
            "serviceCIDR": self.config.serviceCIDR,
            "kubeProxyReplacement": self.config.kubeProxyReplacement,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        rtprotos.ensure_registered()  # `ip route` shows `proto novanet`
        # The dataplane first: tunnel plugins plug their programs into maps the dataplane pins.
        dp_up = self.watchdog.baseline(wait=30.0) and self.sync_dataplane()
        if dp_up:
            self._check_families()
        if self.tunnel is not None:
            if dp_up:
                self.nodes.setup_tunnel()
            else:
                log.error("dataplane not reachable: tunnel setup deferred until it is")
        if self.routing is not None:
            self.routing.start(self.node)
        masquerade.apply(self.config.egress.masqueradeEnabled, self.node.pod_cidrs, self.config.cluster_cidrs)
        self.cni.process_pending_deletes(self.config.sockets.cni)
        self.reconcile()
        self._start_pool()
        self.policy.start()  # full compile once; state events then send deltas
        self.services.start()
        self.nodes.sync_nodes()
        self.nodes.sync_remotes()
        self.reconciler.drop_stale_remotes()
        if dp_up:
            self.watchdog.pushed()
        threading.Thread(target=self._watch_state, name="state-watch", daemon=True).start()
        self.watchdog.start()
        threading.Thread(target=self.cni.watch_pending_deletes, args=(self.config.sockets.cni, self.stop_event),
                         name="pending-del", daemon=True).start()
        self.ready = True
        log.info("agent ready: node=%s ip=%s podCIDR=%s mtu=%d endpoints=%d", self.node.name, self.node.ip,
                 self.node.pod_cidr, self.mtu, len(self.store.all()))

    def _check_families(self) -> None:
        """Every family of the node's PodCIDRs carried by the datapath and by the tunnel or routing
        backend (ConfigError naming clusterCIDR otherwise)."""
        st = self.dataplane.call("dp.status", wait=0)
        carriers = [(f"datapath {st.get('datapath', self.config.datapath)!r}",
                     st.get("ipFamilies", families.DEFAULT_FAMILIES))]
        transport = self.tunnel if self.tunnel is not None else self.routing
        if transport is not None:
            kind = "tunnelProtocol" if self.tunnel is not None else "routing backend"
            carriers.append((f"{kind} {transport.name!r}", families.served(transport)))
        families.check(self.config.cluster_cidrs, self.node.pod_cidrs, carriers)

    def _start_pool(self) -> None:
        cfg = self.config.warmPool
        if cfg.size == 0:
            return
        # Whether the datapath attaches programs ahead (capability "prewarm") is asked when the
        # dataplane first answers, not only now: a dataplane still compiling at the agent's start
        # would otherwise leave the pool without programs for the agent's whole life.
        caps: dict[str, bool] = {}

        def prewarm() -> bool:
            if "prewarm" not in caps:
                st = self.dataplane.call("dp.status", {"brief": True}, wait=0)
                caps["prewarm"] = "prewarm" in st.get("capabilities", [])
            return caps["prewarm"]

        try:
            prewarm()
        except DataplaneUnavailable:
            log.warning("warm pool: dataplane not reachable yet; members get their programs when it answers")

        def attach(name: str) -> None:
            if prewarm():
                self.dataplane.call("dp.prewarm.attach", {"host_ifname": name})

        def release(name: str) -> None:
            if prewarm():
                self.dataplane.call("dp.prewarm.release", {"host_ifname": name})

        self.pool = warmpool.WarmPool(cfg.size, cfg.refillIdleMs, self.mtu, attach, release)
        self.pool.start()

    def stop(self, withdraw: bool = False) -> None:
        """Stop the control plane. Pods, pinned datapath state, tunnels and (unless ``withdraw``)
        advertised routes stay: a restart must not cut traffic (the guide's restart semantics)."""
        self.stop_event.set()
        if self.pool is not None:
            self.pool.stop()
        if self.routing is not None:
            try:
                self.routing.stop(withdraw=withdraw)
            except Exception as e:  # shutting down: report, do not mask the rest of the shutdown
                log.error("routing backend stop failed: %s", e)
        self.dataplane.close()

    def reconcile(self) -> dict[str, Any]:
        """Compare live state with desired state and fix only the differences."""
        return self.reconciler.reconcile()

    def sync_dataplane(self, wait: float = 0.0) -> bool:
        try:
            self.dataplane.call("dp.configure", {"settings": self.datapath_settings()}, wait=wait)
            return True
        except DataplaneUnavailable as e:
            log.warning("%s", e)
            return False

    def _resync_settings(self) -> None:
        # Before start() completes the policy is not compiled yet: start pushes it itself.
        if self.ready and self.sync_dataplane():
            self.policy.resync()

    def _resync_dataplane(self) -> None:
        self.sync_dataplane()
        try:
            self._check_families()  # a dataplane that came up (or back) with another datapath
            self.families_error = None
        except ConfigError as e:
            log.error("%s", e)
            self.families_error = str(e)
        if self.tunnel is not None and not self.nodes.tunnel_ok:
            self.nodes.setup_tunnel()
        if self.pool is not None:
            self.pool.reattach()  # the dataplane's start-up reconcile unpinned the pooled veths' links
        with self.lock:
            self.reconciler.datapath()
            self.nodes.sync_remotes()
            self.policy.resync()
            self.services.resync()

    # ------------------------------------------------------------------ state
    def _watch_state(self) -> None:
        while not self.stop_event.is_set():
            try:
                for ev in self.source.watch(self.stop_event):
                    self.apply_event(ev)
            except Exception:  # the watch must survive a bad event or a source hiccup
                log.exception("state watch failed; restarting it in 1 s")
                self.stop_event.wait(1)

    def apply_event(self, ev: StateEvent) -> None:
        received = time.perf_counter()
        with self.lock:
            old = self.state.table(ev.kind).get(ev.obj.key) if ev.kind else None
            self.state.apply(ev)
            if ev.kind == "Pod":
                new = ev.obj if ev.type != "DELETED" else None
                self.endpoints.pod_changed(old, new)
                self.nodes.pod_changed(old, new)
            elif ev.kind == "Node":
                self.nodes.sync_nodes()
            elif ev.type == "SYNCED":
                self.state_version = self.state.version
            self.policy.apply_event(ev, received, old)  # after endpoints carry their new identity
            self.services.apply_event(ev, old, received)
        if ev.kind:
            self.event_timings.append((ev.kind, time.perf_counter() - received))

    # ------------------------------------------------------------------ inspection
    def status(self) -> dict[str, Any]:
        try:
            dp = self.dataplane.call("dp.status")
        except DataplaneUnavailable as e:
            dp = {"connected": False, "error": str(e)}
        else:
            dp = {"connected": True, **dp}
        policy = self.policy.status()
        routing: dict[str, Any] | None = None
        if self.routing is not None:
            try:
                routing = {"backend": self.routing.name, **self.routing.status()}
            except Exception as e:  # status must answer even when the routing backend is broken
                routing = {"backend": self.routing.name, "connected": False, "error": f"{type(e).__name__}: {e}"}
        return {
            "version": __version__,
            "ready": self.ready and dp.get("connected", False),
            "nodeName": self.node.name,
            "nodeIP": self.node.ip,
            "podCIDR": self.node.pod_cidr,
            "clusterCIDR": self.config.clusterCIDR,
            "nodeIPs": list(self.node.ips),
            "podCIDRs": list(self.node.pod_cidrs),
            "gateways": list(self.gateways),
            "routingMode": self.config.routingMode,
            "tunnelProtocol": self.config.tunnelProtocol if self.config.routingMode == "overlay" else "",
            "datapath": self.config.datapath,
            "ipam": self.config.ipam.type,
            "mtu": self.mtu,
            "gateway": self.gateway,
            "defaultDeny": self.config.policy.defaultDeny,
            "masquerade": self.config.egress.masqueradeEnabled,
            "stateVersion": self.state_version,
            "endpoints": len(self.store.all()),
            "identities": len(self.identities.items()),
            "policies": policy["policies"],
            "rejectedPolicies": policy["rejected"],
            "serviceFrontends": len(self.services.desired),
            "kubeProxyReplacement": self.config.kubeProxyReplacement,
            "tunnels": len(self.tunnel.status()) if self.tunnel is not None else 0,
            "remoteEndpoints": len(self.nodes.remotes),
            "nodes": 1 + len(self.nodes.remote_nodes or []),
            "warmPool": self.pool.status() if self.pool is not None else {"size": 0},
            "dataplane": dp,
            **({"routing": routing} if routing is not None else {}),
            "uptimeSeconds": round(time.time() - self.started_at, 1),
            "api": {name: srv.stats() for name, srv in self.api_servers.items()},
            "dataplaneResyncs": self.watchdog.resyncs,
        }
