"""Reconciliation: compare the live node (veths, netns, IPAM, datapath) with the agent's records
and fix only the differences. Runs at start, on ``novanetctl reconcile``, and (its datapath part)
whenever the dataplane comes back."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from novanet_core.agent import podnet
from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.agent.pods import LocalEndpoints
from novanet_core.agent.remote_batch import RemoteBatch
from novanet_core.agent.remotes import NodeSync
from novanet_core.backends import IpamBackend
from novanet_core.types import Attachment

log = logging.getLogger("novanet.agent")


class Reconciler:
    """``resync_settings`` pushes node settings and policy to the dataplane (once the agent is
    ready: before that, start() pushes them itself); ``in_flight`` is the CNI's attachments being
    added (host interface name -> attachment), read under ``lock``."""

    def __init__(self, lock: threading.RLock, endpoints: LocalEndpoints, ipam: IpamBackend, dataplane: DataplaneClient,
                 nodes: NodeSync, resync_settings: Callable[[], None], in_flight: dict[str, Attachment]):
        self.lock, self.endpoints, self.store = lock, endpoints, endpoints.store
        self.identities = endpoints.identities
        self.ipam, self.dataplane, self.nodes, self.resync_settings = ipam, dataplane, nodes, resync_settings
        self.in_flight = in_flight
        # Remote entries the datapath held at the agent's start, before the remotes were pushed.
        self.listed_remotes: list[str] = []

    def reconcile(self) -> dict[str, Any]:
        """Compare live state with desired state and fix only the differences."""
        report: dict[str, list[str]] = {"removed_records": [], "removed_veths": [], "released_ips": [],
                                        "datapath_removed": [], "datapath_added": []}
        labels_for = self.endpoints.labels_for
        with self.lock:
            live_veths = podnet.list_host_veths()
            for ep in self.store.all():
                if ep.host_ifname not in live_veths or not os.path.exists(ep.netns):
                    log.info("reconcile: endpoint %s/%s (%s) is gone; cleaning up", ep.namespace, ep.pod, ep.ip)
                    self.endpoints.teardown(ep)
                    report["removed_records"].append(ep.container_id)
                else:
                    ep.host_ifindex = live_veths[ep.host_ifname]
                    self.identities.acquire(ep.namespace, labels_for(ep.namespace, ep.pod, ep.labels))
            adding = dict(self.in_flight)  # veth and address exist before the record: not orphans
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
                ep.identity = self.identities.lookup(ep.namespace, labels_for(ep.namespace, ep.pod, ep.labels))
                ep.labels = dict(labels_for(ep.namespace, ep.pod, ep.labels))
                self.store.put(ep)
            # Settings and policy too: reconcile is the "make the datapath what I want" command,
            # and a datapath changed behind the agent's back is fixed by it, not only by a restart.
            self.resync_settings()
            report["datapath_removed"], report["datapath_added"] = self.datapath()
        log.info("reconcile: %s", {k: len(v) for k, v in report.items()})
        return report

    def datapath(self) -> tuple[list[str], list[str]]:
        """The datapath's endpoint entries against the records: (removed, added or changed) IPs."""
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
        # the remote list is empty, and removing every remote entry cut cross-node replies until
        # the push (the chaos soak lost a ping across each agent restart). At start the listed
        # entries wait for drop_stale_remotes(), after the push: listing them again then was
        # a second read of the whole map (30,000 entries in a 1,000-node cluster).
        if self.nodes.remotes_synced:
            removed.extend(self._drop_remotes([e["ip"] for e in live_remote]))
        else:
            self.listed_remotes = [e["ip"] for e in live_remote]
        added = []
        for ep in self.store.all():
            for ip in ep.ips:
                cur = live.get(ip)
                if cur is None or cur.get("identity") != ep.identity or cur.get("host_ifindex") != ep.host_ifindex:
                    added.append(ip)
            # Upsert every endpoint: cheap, idempotent, and re-attaches programs that went missing.
            self.dataplane.call("dp.endpoint.upsert", {"endpoint": ep.to_dict()})
        return removed, added

    def drop_stale_remotes(self) -> list[str]:
        """After the start-up's push of the remotes: the entries listed before it whose pods are
        gone (or never were)."""
        listed, self.listed_remotes = self.listed_remotes, []
        return self._drop_remotes(listed)

    def _drop_remotes(self, listed: list[str]) -> list[str]:
        gone = [ip for ip in listed if ip not in self.nodes.remotes]
        RemoteBatch(self.nodes.send).delete_all(gone)
        return gone
