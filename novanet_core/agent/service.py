"""The agent: turns cluster state and CNI requests into endpoints, identities and datapath state.

Threads: the API servers (one thread per connection), the state watcher, and the dataplane
monitor. A single re-entrant lock serialises endpoint changes; netlink work per pod takes a few
milliseconds, so serialising keeps ADD/DEL/label updates simple without costing throughput.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from novanet_core import __version__, ipfamily
from novanet_core.agent import families, masquerade, node, podnet, rtprotos, tombstones, warmpool
from novanet_core.agent.cni_stats import CniStats
from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.agent.endpoints import EndpointStore
from novanet_core.agent.policy_sync import PolicySync
from novanet_core.agent.remote_batch import RemoteBatch
from novanet_core.backends import BackendContext, ConfigError, IpamError, PoolExhausted
from novanet_core.cni import bandwidth as cni_bandwidth
from novanet_core.cni import protocol as cni
from novanet_core.cni import versions as cni_versions
from novanet_core.config.models import NovaNetConfig
from novanet_core.identity import IdentityAllocator
from novanet_core.plugins.manager import PluginHost
from novanet_core.services.sync import ServiceSync
from novanet_core.state.model import ClusterState, Pod, StateEvent
from novanet_core.types import Attachment, Endpoint, IpamRequest, NodeInfo, RemoteEndpoint

log = logging.getLogger("novanet.agent")


class CniFailure(Exception):
    def __init__(self, code: int, msg: str, detail: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.detail = code, msg, detail


class Agent:
    def __init__(self, config: NovaNetConfig, host: PluginHost):
        self.config = config
        self.host = host
        self.lock = threading.RLock()
        # host interface name -> the attachment an ADD is building outside the lock (_cni_admitted)
        self.cni_in_flight: dict[str, Attachment] = {}
        self._cni_landed = threading.Condition(self.lock)
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
        self.remotes: dict[str, RemoteEndpoint] = {}
        self._remotes_synced = False
        self.dataplane_resyncs = 0  # completed full pushes to the dataplane (first connect, restarts)
        # None until the first node list has been pushed, so that even an empty list (a one-node
        # cluster) reaches the tunnel/routing backends once.
        self.remote_nodes: list[NodeInfo] | None = None
        self._tunnel_ok = False
        self._dp_generation = 0
        self.policy = PolicySync(self)  # NetworkPolicy: compiler + datapath sync (policy_sync.py)
        self.services = ServiceSync(self)  # Services: per-node frontends + datapath sync (novanet_core.services)
        # Per-step durations of recent ADDs (seconds), for the metrics and the CNI benchmark.
        self.timings: collections.deque[dict[str, float]] = collections.deque(maxlen=1000)
        # (kind, seconds) of recent state events, source event in to everything applied (state.timings).
        self.event_timings: collections.deque[tuple[str, float]] = collections.deque(maxlen=5000)
        self.cni_stats = CniStats()  # fed by the CNI socket's handlers (api_methods), read by metrics
        self.api_servers: dict[str, Any] = {}  # socket name -> ApiServer, set by main (limits, refusals)
        self.pool: warmpool.WarmPool | None = None  # started in start(), once the dataplane answered
        self.families_error: str | None = None  # set while a backend cannot carry a family of the node's

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
        dp_up = self.sync_dataplane(wait=30.0)
        if dp_up:
            self._check_families()
        if self.tunnel is not None:
            if dp_up:
                self._setup_tunnel()
            else:
                log.error("dataplane not reachable: tunnel setup deferred until it is")
        if self.routing is not None:
            self.routing.start(self.node)
        masquerade.apply(self.config.egress.masqueradeEnabled, self.node.pod_cidrs, self.config.cluster_cidrs)
        self._process_pending_deletes()
        self.reconcile()
        self._start_pool()
        self.policy.start()  # full compile once; state events then send deltas
        self.services.start()
        self._sync_nodes()
        self._sync_remotes()
        threading.Thread(target=self._watch_state, name="state-watch", daemon=True).start()
        threading.Thread(target=self._monitor_dataplane, name="dataplane-monitor", daemon=True).start()
        threading.Thread(target=self._watch_pending_deletes, name="pending-del", daemon=True).start()
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
        caps: list[str] = []
        try:
            caps = self.dataplane.call("dp.status", {"brief": True}, wait=0).get("capabilities", [])
        except DataplaneUnavailable:
            log.warning("warm pool: dataplane not reachable; members get their programs at ADD")

        def attach(name: str) -> None:
            self.dataplane.call("dp.prewarm.attach", {"host_ifname": name})

        def release(name: str) -> None:
            self.dataplane.call("dp.prewarm.release", {"host_ifname": name})

        has = "prewarm" in caps
        self.pool = warmpool.WarmPool(cfg.size, cfg.refillIdleMs, self.mtu, attach if has else None,
                                      release if has else None)
        self.pool.start()

    def _setup_tunnel(self) -> bool:
        assert self.tunnel is not None
        try:
            self.tunnel.setup(self.node)
        except Exception as e:  # retried when the dataplane (re)connects; never a crash loop
            log.error("tunnel %s setup failed: %s: %s (will retry)", self.tunnel.name, type(e).__name__, e)
            self._tunnel_ok = False
            return False
        self._tunnel_ok = True
        if self.remote_nodes is not None:
            self.tunnel.sync_nodes(self.node, self.remote_nodes)
        return True

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

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> dict[str, Any]:
        """Compare live state with desired state and fix only the differences."""
        report: dict[str, list[str]] = {"removed_records": [], "removed_veths": [], "released_ips": [],
                                        "datapath_removed": [], "datapath_added": []}
        with self.lock:
            live_veths = podnet.list_host_veths()
            for ep in self.store.all():
                if ep.host_ifname not in live_veths or not os.path.exists(ep.netns):
                    log.info("reconcile: endpoint %s/%s (%s) is gone; cleaning up", ep.namespace, ep.pod, ep.ip)
                    self._teardown(ep)
                    report["removed_records"].append(ep.container_id)
                else:
                    ep.host_ifindex = live_veths[ep.host_ifname]
                    self.identities.acquire(ep.namespace, self._labels_for(ep.namespace, ep.pod, ep.labels))
            adding = dict(self.cni_in_flight)  # veth and address exist before the record: not orphans
            known = {e.host_ifname for e in self.store.all()} | set(adding)
            for name in set(live_veths) - known:
                # A veth of ours without a record: left by a crash between creating it and recording it.
                log.info("reconcile: removing orphan pod veth %s", name)
                podnet.delete(name[len(podnet.HOST_PREFIX):])
                report["removed_veths"].append(name)
            valid = [Attachment(e.container_id, e.ifname) for e in self.store.all()] + list(adding.values())
            released = self.ipam.gc(valid)
            report["released_ips"] = [a.address for a in released]
            for ep in self.store.all():
                ep.identity = self.identities.lookup(ep.namespace, self._labels_for(ep.namespace, ep.pod, ep.labels))
                ep.labels = dict(self._labels_for(ep.namespace, ep.pod, ep.labels))
                self.store.put(ep)
            # Settings and policy too: reconcile is the "make the datapath what I want" command,
            # and a datapath changed behind the agent's back is fixed by it, not only by a restart.
            if self.ready and self.sync_dataplane():
                self.policy.resync()
            dp_removed, dp_added = self._reconcile_datapath()
            report["datapath_removed"], report["datapath_added"] = dp_removed, dp_added
        log.info("reconcile: %s", {k: len(v) for k, v in report.items()})
        return report

    def _reconcile_datapath(self) -> tuple[list[str], list[str]]:
        try:
            listed = self.dataplane.call("dp.endpoint.list", wait=0)
        except DataplaneUnavailable:
            return [], []
        live = {e["ip"]: e for e in listed if e.get("local", True)}
        live_remote = [e for e in listed if not e.get("local", True)]
        want = {ip: e for e in self.store.all() for ip in e.ips}  # a dual-stack endpoint is listed per address
        removed = []
        for ip, e in live.items():
            if ip not in want:
                self.dataplane.call("dp.endpoint.delete", {"ip": ip, "host_ifname": e.get("host_ifname")})
                removed.append(ip)
        # Only once the remotes have been pushed from the state source: before that (agent start)
        # self.remotes is empty, and removing every remote entry cut cross-node replies until the
        # push (the chaos soak lost a ping across each agent restart).
        gone = [e["ip"] for e in (live_remote if self._remotes_synced else [])
                if e["ip"] not in self.remotes]  # pods on other nodes that are gone (or never were)
        RemoteBatch(self._dp_call).delete_all(gone)
        removed.extend(gone)
        added = []
        for ep in self.store.all():
            for ip in ep.ips:
                cur = live.get(ip)
                if cur is None or cur.get("identity") != ep.identity or cur.get("host_ifindex") != ep.host_ifindex:
                    added.append(ip)
            # Upsert every endpoint: cheap, idempotent, and re-attaches programs that went missing.
            self.dataplane.call("dp.endpoint.upsert", {"endpoint": ep.to_dict()})
        return removed, added

    def sync_dataplane(self, wait: float = 0.0) -> bool:
        try:
            self.dataplane.call("dp.configure", {"settings": self.datapath_settings()}, wait=wait)
            return True
        except DataplaneUnavailable as e:
            log.warning("%s", e)
            return False

    def _monitor_dataplane(self) -> None:
        # Either side may restart: when the dataplane comes back, push config and reconcile.
        was = self.dataplane.connected
        while not self.stop_event.wait(0.5):
            try:
                st = self.dataplane.call("dp.status", {"brief": True})
                now = True
                gen = st.get("generation", 0)
            except DataplaneUnavailable:
                now, gen = False, self._dp_generation
            except Exception as e:  # an error answer: still connected, and the monitor must go on
                log.error("dataplane status failed: %s: %s", type(e).__name__, e)
                continue
            if now and (not was or gen != self._dp_generation):
                log.info("dataplane (re)connected (generation %s): resyncing", gen)
                try:
                    self._resync_dataplane()
                except Exception as e:
                    # This thread dying (it did, on a rate-limited call) would end every later
                    # resync; log, and try the whole resync again on the next round.
                    log.exception("dataplane resync failed (%s: %s); retrying", type(e).__name__, e)
                    continue
                self.dataplane_resyncs += 1
            self._dp_generation = gen
            was = now

    def _resync_dataplane(self) -> None:
        self.sync_dataplane()
        try:
            self._check_families()  # a dataplane that came up (or back) with another datapath
            self.families_error = None
        except ConfigError as e:
            log.error("%s", e)
            self.families_error = str(e)
        if self.tunnel is not None and not self._tunnel_ok:
            self._setup_tunnel()
        if self.pool is not None:
            self.pool.reattach()  # the dataplane's start-up reconcile unpinned the pooled veths' links
        with self.lock:
            self._reconcile_datapath()
            self._sync_remotes()
            self.policy.resync()
            self.services.resync()

    def _process_pending_deletes(self) -> None:
        for f, req in tombstones.ready(tombstones.directory(self.config.sockets.cni)):
            try:
                self.cni_del(req)
                log.info("processed deferred DEL for %s/%s", req.get("containerID"), req.get("ifname"))
            except CniFailure as e:
                log.error("deferred DEL %s failed: %s", f.name, e)
            f.unlink(missing_ok=True)

    def _watch_pending_deletes(self) -> None:
        # A DEL deferred after the start-up pass (the socket was not listening yet) is carried out
        # now, not at the next restart (tombstones.py).
        while not self.stop_event.wait(1.0):
            try:
                self._process_pending_deletes()
            except Exception as e:  # this thread dying would leave every later tombstone unread
                log.exception("deferred DEL pass failed (%s: %s); retrying", type(e).__name__, e)

    # ------------------------------------------------------------------ state
    def _labels_for(self, namespace: str, pod: str, fallback: dict[str, str] | None = None) -> dict[str, str]:
        p = self.state.pods.get(f"{namespace}/{pod}")
        return dict(p.labels) if p is not None else dict(fallback or {})

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
                self._pod_changed(old, ev.obj if ev.type != "DELETED" else None)
            elif ev.kind == "Node":
                self._sync_nodes()
            elif ev.type == "SYNCED":
                self.state_version = self.state.version
            self.policy.apply_event(ev, received)  # after endpoints carry their new identity
            self.services.apply_event(ev, old, received)
        if ev.kind:
            self.event_timings.append((ev.kind, time.perf_counter() - received))

    def _pod_changed(self, old: Pod | None, new: Pod | None) -> None:
        pod = new or old
        assert pod is not None
        for ep in self.store.by_pod(pod.namespace, pod.name):
            labels = dict(new.labels) if new else ep.labels
            ident = self.identities.lookup(ep.namespace, labels)
            if ident != ep.identity or labels != ep.labels:
                # Label change: new identity in the datapath in place, no reconnect.
                self.identities.acquire(ep.namespace, labels)
                self.identities.release(ep.identity)
                log.info("pod %s/%s labels changed: identity %d -> %d", ep.namespace, ep.pod, ep.identity, ident)
                ep.identity, ep.labels = ident, labels
                self.store.put(ep)
                self._dp_upsert(ep)
        self._sync_remote_pod(old, new)

    def _sync_remote_pod(self, old: Pod | None, new: Pod | None, batch: RemoteBatch | None = None) -> None:
        """One remote entry per address of a pod on another node (one identity for all of them).

        With ``batch`` the changes are collected there instead of sent one request each."""
        out = batch if batch is not None else RemoteBatch(self._dp_call)
        keep = set(new.ips) if new is not None else set()
        for ip in old.ips if old is not None else ():
            if ip not in keep and ip in self.remotes:
                self.remotes.pop(ip)
                out.delete.append(ip)
        if not (new is None or not new.ips or new.node == self.node.name
                or (new.host_ip and new.host_ip in self.node.ips)):
            ident = self.identities.lookup(new.namespace, new.labels)
            for ip in new.ips:
                rem = RemoteEndpoint(ip=ip, identity=ident, node_ip=self._remote_node_ip(new, ip),
                                     namespace=new.namespace, pod=new.name)
                if self.remotes.get(ip) != rem:
                    self.remotes[ip] = rem
                    out.upsert.append(rem.__dict__)
        if batch is None:
            out.send_single()

    def _remote_node_ip(self, pod: Pod, ip: str) -> str:
        """The node address a remote pod's address is reached through: in native mode the node's
        address of that family (the BGP next hop); in overlay mode the tunnel endpoint, the node's
        primary address (any inner family rides one underlay)."""
        node = self.state.nodes.get(pod.node or "")
        ips = list(pod.host_ips)
        ips += [a for a in (node.internal_ips if node else ()) if a not in ips]
        if self.config.routingMode == "native":
            return ipfamily.pick(ips, ipfamily.family_of(ip)) or (ips[0] if ips else "")
        return ips[0] if ips else ""

    def _sync_remotes(self) -> None:
        batch = RemoteBatch(self._dp_call)
        for pod in list(self.state.pods.values()):
            self._sync_remote_pod(None, pod, batch)
            if batch.full():
                batch.flush()
        batch.flush()
        self._remotes_synced = True

    def _sync_nodes(self) -> None:
        remotes = [NodeInfo(n.name, n.internal_ip, n.pod_cidr, pod_cidrs=list(n.pod_cidrs), ips=list(n.internal_ips))
                   for n in self.state.nodes.values() if n.name != self.node.name and n.internal_ip and n.pod_cidr]
        remotes.sort(key=lambda n: n.name)
        if remotes == self.remote_nodes:
            return
        self.remote_nodes = remotes
        if self.tunnel is not None and self._tunnel_ok:
            try:
                self.tunnel.sync_nodes(self.node, remotes)
            except Exception as e:  # e.g. the dataplane restarting: the reconnect resync repeats it
                log.error("tunnel %s node sync failed: %s: %s", self.tunnel.name, type(e).__name__, e)
                self._tunnel_ok = False
        if self.routing is not None:
            self.routing.sync_nodes(self.node, remotes)
        self.host.hook.novanet_nodes_changed(local=self.node, remotes=remotes)

    def _dp_call(self, method: str, params: dict[str, Any]) -> None:
        try:
            self.dataplane.call(method, params)
        except DataplaneUnavailable as e:
            # The monitor resyncs everything when the dataplane returns.
            log.warning("%s failed (will resync on reconnect): %s", method, e)

    def _dp_upsert(self, ep: Endpoint) -> None:
        self._dp_call("dp.endpoint.upsert", {"endpoint": ep.to_dict()})

    # ------------------------------------------------------------------ CNI
    def cni_add(self, req: dict[str, Any]) -> dict[str, Any]:
        cid, ifname, netns = req["containerID"], req["ifname"], req["netns"]
        args = req.get("args") or {}
        namespace = args.get("K8S_POD_NAMESPACE", "default")
        podname = args.get("K8S_POD_NAME", cid[:12])
        conf = req.get("config") or {}
        mtu = int(conf.get("mtu") or self.mtu)
        version = conf.get("cniVersion") or cni.SPEC_VERSION
        if version not in cni_versions.SUPPORTED_VERSIONS:
            raise CniFailure(cni.ERR_INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported")
        try:
            ingress_rate, egress_rate = cni_bandwidth.limits(conf)
        except cni.CniError as e:
            raise CniFailure(e.code, e.msg) from None
        if not os.path.exists(netns):
            raise CniFailure(cni.ERR_NETNS, f"network namespace {netns} does not exist")
        if self.families_error:
            raise CniFailure(cni.ERR_INVALID_CONFIG, self.families_error)
        with self._cni_admitted(cid, ifname):
            t0 = time.perf_counter()
            try:
                alloc = self.ipam.allocate(IpamRequest(container_id=cid, ifname=ifname, namespace=namespace, pod=podname))
            except PoolExhausted as e:
                raise CniFailure(cni.ERR_IPAM_EXHAUSTED, str(e)) from None
            except IpamError as e:
                raise CniFailure(cni.ERR_IPAM, str(e)) from None
            t1 = time.perf_counter()
            member: warmpool.Member | None = None
            more = [(a.address, a.gateway) for a in alloc.addresses[1:]]
            try:
                pooled = (warmpool.plumb(self.pool, cid, netns, ifname, alloc.address, alloc.gateway, mtu, more)
                          if self.pool is not None else None)
                if pooled is not None:
                    link, member = pooled
                else:
                    link = podnet.create(cid, netns, ifname, alloc.address, alloc.gateway, mtu, more)
            except podnet.PodNetError as e:
                self.ipam.release(cid, ifname)
                raise CniFailure(cni.ERR_INTERFACE, str(e)) from None
            with self.lock:
                labels = self._labels_for(namespace, podname)
                ep = Endpoint(container_id=cid, ifname=ifname, namespace=namespace, pod=podname, netns=netns,
                              ip=alloc.address, mac=link.pod_mac, host_ifname=link.host_ifname,
                              host_ifindex=link.host_ifindex, host_mac=link.host_mac, gateway=alloc.gateway, mtu=mtu,
                              identity=self.identities.acquire(namespace, labels), labels=labels, node_ip=self.node.ip,
                              ips=[a.address for a in alloc.addresses], gateways=[a.gateway for a in alloc.addresses],
                              ingress_rate=ingress_rate, egress_rate=egress_rate)
                t2 = time.perf_counter()
                try:
                    # One all-or-nothing call: the dataplane writes the policy before the endpoint and
                    # takes both out again if the endpoint fails.
                    req = {"endpoint": ep.to_dict(), "policy": self.policy.policy_for(ep)}
                    if member is not None:
                        req["prewarmed"] = member.host_ifname  # its attachment becomes the endpoint's
                    added = self.dataplane.call("dp.endpoint.add", req, wait=5.0)
                except (DataplaneUnavailable, Exception) as e:
                    podnet.delete(cid)
                    self.ipam.release(cid, ifname)
                    self.identities.release(ep.identity)
                    code = cni.ERR_TRY_AGAIN_LATER if isinstance(e, DataplaneUnavailable) else cni.ERR_DATAPATH
                    raise CniFailure(code, f"datapath did not accept endpoint {ep.ip}: {e}") from None
                t3 = time.perf_counter()
                self.policy.endpoint_added(ep, added, t2)
                self.store.put(ep)
                t4 = time.perf_counter()
        self.timings.append({"ipam": t1 - t0, "interface": t2 - t1, "datapath": t3 - t2, "record": t4 - t3})
        log.info("ADD %s/%s %s ip=%s identity=%d in %.1f ms (ipam %.1f, interface %.1f, datapath %.1f, record %.1f)",
                 namespace, podname, cid[:12], ",".join(ep.ips), ep.identity, (t4 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                 (t3 - t2) * 1e3, (t4 - t3) * 1e3)
        self.host.hook.novanet_endpoint_added(endpoint=ep)
        # Rendered at the runtime's version here, once, so that every client only prints it.
        return cni_versions.convert({
            "cniVersion": cni.SPEC_VERSION,
            "interfaces": [
                {"name": link.host_ifname, "mac": link.host_mac},
                {"name": ifname, "mac": link.pod_mac, "mtu": mtu, "sandbox": netns},
            ],
            "ips": [{"address": f"{a.address}/{128 if ':' in a.address else 32}", "gateway": a.gateway, "interface": 1}
                    for a in alloc.addresses],
            "routes": [{"dst": "::/0" if ":" in a.address else "0.0.0.0/0", "gw": a.gateway} for a in alloc.addresses],
        }, version)

    @contextlib.contextmanager
    def _cni_admitted(self, cid: str, ifname: str) -> Iterator[None]:
        """The container's host interface name reserved for this ADD until it is recorded.

        IPAM (the store locks itself) and the interface (the move into the pod netns waits out
        an RCU grace period) run outside the agent's lock, so concurrent ADDs overlap there; 20
        in flight ran one after another before. Meanwhile the ADD is in flight: a second ADD of
        the container is refused (try again later), a DEL of it waits, and reconcile and GC
        count its veth and address as in use."""
        hname = podnet.host_ifname(cid)
        with self.lock:
            busy = self.cni_in_flight.get(hname)
            if busy is not None:
                raise CniFailure(cni.ERR_TRY_AGAIN_LATER, f"host interface {hname} is being added for container "
                                 f"{busy.container_id} interface {busy.ifname}; try again")
            existing = self.store.get(cid, ifname)
            if existing is not None:
                if podnet.host_link_exists(existing.host_ifname) is not None:
                    raise CniFailure(cni.ERR_INTERFACE, f"container {cid} already has interface {ifname} (ADD without DEL)")
                self._teardown(existing)
            clash = next((e for e in self.store.all() if e.host_ifname == hname), None)
            if clash is not None:
                # The guide's naming (nv + first 11 characters of the container id) cannot tell
                # these two apart; refuse rather than touch the other pod's interface.
                raise CniFailure(cni.ERR_INTERFACE, f"host interface name {hname} is already used by container "
                                 f"{clash.container_id} ({clash.namespace}/{clash.pod}); container ids must differ "
                                 "in their first 11 characters")
            self.cni_in_flight[hname] = Attachment(cid, ifname)
        try:
            yield
        finally:
            with self.lock:
                self.cni_in_flight.pop(hname, None)
                self._cni_landed.notify_all()

    def _teardown(self, ep: Endpoint) -> None:
        self._dp_call("dp.endpoint.delete", {"ip": ep.ip, "host_ifname": ep.host_ifname, "ips": ep.ips})
        self.policy.endpoint_removed(ep)
        podnet.delete(ep.container_id)
        self.ipam.release(ep.container_id, ep.ifname)
        self.identities.release(ep.identity)
        self.store.remove(ep.container_id, ep.ifname)

    def cni_del(self, req: dict[str, Any]) -> None:
        cid, ifname = req["containerID"], req["ifname"]
        with self.lock:
            while podnet.host_ifname(cid) in self.cni_in_flight:  # an ADD of it still in flight
                self._cni_landed.wait(1.0)
            ep = self.store.get(cid, ifname)
            if ep is not None:
                self._teardown(ep)
            else:
                # Unknown to us (already deleted, or never fully added): still free what may be left.
                podnet.delete(cid)
                self.ipam.release(cid, ifname)
        if ep is not None:
            self.host.hook.novanet_endpoint_removed(endpoint=ep)

    def cni_check(self, req: dict[str, Any]) -> None:
        cid, ifname, netns = req["containerID"], req["ifname"], req["netns"]
        ep = self.store.get(cid, ifname)
        if ep is None:
            raise CniFailure(cni.ERR_UNKNOWN_CONTAINER, f"no NovaNet endpoint for container {cid} interface {ifname}")
        problems = podnet.check(cid, netns, ifname, ep.ip, ep.ips[1:])
        alloc = self.ipam.get(cid, ifname)
        allocated = {a.address for a in alloc.addresses} if alloc is not None else set()
        for ip in ep.ips:
            if ip not in allocated:
                problems.append(f"IPAM has no allocation of {ip} for this attachment")
        prev = (req.get("config") or {}).get("prevResult") or {}
        prev_ips = {i.get("address", "").split("/")[0] for i in prev.get("ips", [])}
        missing = sorted(set(ep.ips) - prev_ips)
        if prev_ips and missing:
            problems.append(f"prevResult lists {sorted(prev_ips)} but the endpoint has {', '.join(missing)}")
        try:
            live = {e["ip"] for e in self.dataplane.call("dp.endpoint.list")}
            for ip in ep.ips:
                if ip not in live:
                    problems.append(f"datapath has no entry for {ip}")
        except DataplaneUnavailable as e:
            raise CniFailure(cni.ERR_TRY_AGAIN_LATER, str(e)) from None
        if problems:
            raise CniFailure(cni.ERR_CHECK_FAILED, "CHECK failed: " + "; ".join(problems))

    def cni_status(self) -> None:
        if not self.ready:
            raise CniFailure(cni.ERR_NOT_AVAILABLE, "NovaNet agent is starting")
        if not self.dataplane.connected:
            raise CniFailure(cni.ERR_NOT_AVAILABLE, "NovaNet dataplane is not connected")
        st = self.ipam.status()
        if not st.get("ready", True):
            raise CniFailure(cni.ERR_NOT_AVAILABLE, f"IPAM not ready: {st}")
        if st.get("capacity") is not None and st.get("allocated", 0) >= st["capacity"]:
            raise CniFailure(cni.ERR_NOT_AVAILABLE, f"IP pool {st.get('pool')} is exhausted")

    def cni_gc(self, req: dict[str, Any]) -> dict[str, Any]:
        valid_list = (req.get("config") or {}).get("cni.dev/valid-attachments", [])
        valid = {Attachment(a["containerID"], a.get("ifname", "eth0")) for a in valid_list}
        removed = []
        for ep in self.store.all():
            if Attachment(ep.container_id, ep.ifname) not in valid:
                self.cni_del({"containerID": ep.container_id, "ifname": ep.ifname})
                removed.append(ep.container_id)
        with self.lock:
            released = self.ipam.gc(valid | set(self.cni_in_flight.values()))
        return {"endpointsRemoved": removed, "ipsReleased": [a.address for a in released]}

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
            "remoteEndpoints": len(self.remotes),
            "nodes": 1 + len(self.remote_nodes or []),
            "warmPool": self.pool.status() if self.pool is not None else {"size": 0},
            "dataplane": dp,
            **({"routing": routing} if routing is not None else {}),
            "uptimeSeconds": round(time.time() - self.started_at, 1),
            "api": {name: srv.stats() for name, srv in self.api_servers.items()},
            "dataplaneResyncs": self.dataplane_resyncs,
        }
