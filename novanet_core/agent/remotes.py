"""The other nodes and their pods: the tunnel or routing backend's node list, and the datapath's
entries for pods on other nodes (their identity and node, for cross-node policy and delivery)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from novanet_core import ipfamily
from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.agent.remote_batch import RemoteBatch
from novanet_core.identity import IdentityAllocator
from novanet_core.state.model import ClusterState, Pod
from novanet_core.types import NodeInfo, RemoteEndpoint

log = logging.getLogger("novanet.agent")


class NodeSync:
    """Reads the agent's ``state``; pushes to the tunnel/routing backend and the dataplane."""

    def __init__(self, state: ClusterState, node: NodeInfo, routing_mode: str, identities: IdentityAllocator,
                 dataplane: DataplaneClient, tunnel: Any, routing: Any,
                 nodes_changed: Callable[[NodeInfo, list[NodeInfo]], None]):
        self.state, self.node, self.routing_mode = state, node, routing_mode
        self.identities, self.dataplane = identities, dataplane
        self.tunnel, self.routing, self.nodes_changed = tunnel, routing, nodes_changed
        self.remotes: dict[str, RemoteEndpoint] = {}  # pod IP -> what the datapath was told
        # Until the first push, self.remotes says nothing about what the datapath should hold.
        self.remotes_synced = False
        # None until the first node list has been pushed, so that even an empty list (a one-node
        # cluster) reaches the tunnel/routing backends once.
        self.remote_nodes: list[NodeInfo] | None = None
        self.tunnel_ok = False

    # ------------------------------------------------------------------ nodes
    def setup_tunnel(self) -> bool:
        assert self.tunnel is not None
        try:
            self.tunnel.setup(self.node)
        except Exception as e:  # retried when the dataplane (re)connects; never a crash loop
            log.error("tunnel %s setup failed: %s: %s (will retry)", self.tunnel.name, type(e).__name__, e)
            self.tunnel_ok = False
            return False
        self.tunnel_ok = True
        if self.remote_nodes is not None:
            self.tunnel.sync_nodes(self.node, self.remote_nodes)
        return True

    def sync_nodes(self) -> None:
        remotes = [NodeInfo(n.name, n.internal_ip, n.pod_cidr, pod_cidrs=list(n.pod_cidrs), ips=list(n.internal_ips))
                   for n in self.state.nodes.values() if n.name != self.node.name and n.internal_ip and n.pod_cidr]
        remotes.sort(key=lambda n: n.name)
        if remotes == self.remote_nodes:
            return
        self.remote_nodes = remotes
        if self.tunnel is not None and self.tunnel_ok:
            try:
                self.tunnel.sync_nodes(self.node, remotes)
            except Exception as e:  # e.g. the dataplane restarting: the reconnect resync repeats it
                log.error("tunnel %s node sync failed: %s: %s", self.tunnel.name, type(e).__name__, e)
                self.tunnel_ok = False
        if self.routing is not None:
            self.routing.sync_nodes(self.node, remotes)
        self.nodes_changed(self.node, remotes)

    # ------------------------------------------------------------------ pods on other nodes
    def send(self, method: str, params: dict[str, Any]) -> None:
        dp_call(self.dataplane, method, params)

    def pod_changed(self, old: Pod | None, new: Pod | None, batch: RemoteBatch | None = None) -> None:
        """One remote entry per address of a pod on another node (one identity for all of them).

        With ``batch`` the changes are collected there instead of sent one request each."""
        out = batch if batch is not None else RemoteBatch(self.send)
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
        if self.routing_mode == "native":
            return ipfamily.pick(ips, ipfamily.family_of(ip)) or (ips[0] if ips else "")
        return ips[0] if ips else ""

    def sync_remotes(self) -> None:
        batch = RemoteBatch(self.send)
        for pod in list(self.state.pods.values()):
            self.pod_changed(None, pod, batch)
            if batch.full():
                batch.flush()
        batch.flush()
        self.remotes_synced = True


def dp_call(dataplane: DataplaneClient, method: str, params: dict[str, Any]) -> None:
    """A dataplane call whose loss the watchdog's resync repairs: a dataplane away is logged."""
    try:
        dataplane.call(method, params)
    except DataplaneUnavailable as e:
        log.warning("%s failed (will resync on reconnect): %s", method, e)
