"""This node's pod endpoints as units: their labels from the state, the teardown of everything
an endpoint owns, and label changes carried into the datapath."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from novanet_core.agent import podnet
from novanet_core.agent.dataplane_client import DataplaneClient
from novanet_core.agent.endpoints import EndpointStore
from novanet_core.agent.remotes import dp_call
from novanet_core.backends import IpamBackend
from novanet_core.identity import IdentityAllocator
from novanet_core.state.model import ClusterState, Pod
from novanet_core.types import Endpoint

if TYPE_CHECKING:
    from novanet_core.agent.policy_sync import PolicySync

log = logging.getLogger("novanet.agent")


class LocalEndpoints:
    def __init__(self, state: ClusterState, store: EndpointStore, ipam: IpamBackend, identities: IdentityAllocator,
                 dataplane: DataplaneClient, policy: PolicySync):
        self.state, self.store, self.ipam, self.identities = state, store, ipam, identities
        self.dataplane, self.policy = dataplane, policy

    def labels_for(self, namespace: str, pod: str, fallback: dict[str, str] | None = None) -> dict[str, str]:
        """The pod's labels in the state source (``fallback`` when it does not know the pod)."""
        p = self.state.pods.get(f"{namespace}/{pod}")
        return dict(p.labels) if p is not None else dict(fallback or {})

    def teardown(self, ep: Endpoint) -> None:
        """Everything the endpoint owns: datapath entry and policy, veth, address, identity, record."""
        dp_call(self.dataplane, "dp.endpoint.delete", {"ip": ep.ip, "host_ifname": ep.host_ifname, "ips": ep.ips})
        self.policy.endpoint_removed(ep)
        podnet.delete(ep.container_id)
        self.ipam.release(ep.container_id, ep.ifname)
        self.identities.release(ep.identity)
        self.store.remove(ep.container_id, ep.ifname)

    def pod_changed(self, old: Pod | None, new: Pod | None) -> None:
        """A label change gives the pod's endpoints their new identity in the datapath in place."""
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
                dp_call(self.dataplane, "dp.endpoint.upsert", {"endpoint": ep.to_dict()})
