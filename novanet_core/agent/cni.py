"""The CNI verbs in the agent: ADD, DEL, CHECK, STATUS, GC, and the DELs deferred while it was down.

Endpoint changes run under the agent's lock (serialised; netlink work per pod takes a few
milliseconds). Errors are :class:`CniFailure` with the CNI error code the client prints
(see docs/cni.md).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from novanet_core.agent import podnet, tombstones, warmpool
from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable
from novanet_core.agent.pods import LocalEndpoints
from novanet_core.backends import IpamBackend, IpamError, PoolExhausted
from novanet_core.cni import bandwidth as cni_bandwidth
from novanet_core.cni import protocol as cni
from novanet_core.cni import versions as cni_versions
from novanet_core.types import Attachment, Endpoint, IpamAllocation, IpamRequest, NodeInfo

log = logging.getLogger("novanet.agent")


class CniFailure(Exception):
    def __init__(self, code: int, msg: str, detail: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.detail = code, msg, detail


class CniVerbs:
    """``pool`` returns the warm pool once the agent started one; ``ready`` whether it is ready;
    ``families_error`` why a backend cannot carry a family of the node's (None while all can)."""

    def __init__(self, lock: threading.RLock, node: NodeInfo, mtu: int, endpoints: LocalEndpoints,
                 ipam: IpamBackend, dataplane: DataplaneClient, hook: Any, ready: Callable[[], bool],
                 pool: Callable[[], warmpool.WarmPool | None], families_error: Callable[[], str | None]):
        self.lock, self.node, self.mtu, self.endpoints = lock, node, mtu, endpoints
        self.store, self.policy, self.identities = endpoints.store, endpoints.policy, endpoints.identities
        self.ipam, self.dataplane, self.hook, self.ready, self.pool = ipam, dataplane, hook, ready, pool
        self.families_error = families_error
        # host interface name -> the attachment an ADD is building outside the lock (_admitted)
        self.in_flight: dict[str, Attachment] = {}
        self._landed = threading.Condition(lock)
        # Per-step durations of recent ADDs (seconds), for the metrics and the CNI benchmark.
        self.timings: collections.deque[dict[str, float]] = collections.deque(maxlen=1000)

    # ------------------------------------------------------------------ ADD
    def add(self, req: dict[str, Any]) -> dict[str, Any]:
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
        families_error = self.families_error()
        if families_error:
            raise CniFailure(cni.ERR_INVALID_CONFIG, families_error)
        with self._admitted(cid, ifname):
            t0 = time.perf_counter()
            alloc = self._allocate(IpamRequest(container_id=cid, ifname=ifname, namespace=namespace, pod=podname))
            t1 = time.perf_counter()
            link, member = self._plumb(self.pool(), cid, netns, ifname, alloc, mtu)
            with self.lock:
                labels = self.endpoints.labels_for(namespace, podname)
                ep = Endpoint(container_id=cid, ifname=ifname, namespace=namespace, pod=podname, netns=netns,
                              ip=alloc.address, mac=link.pod_mac, host_ifname=link.host_ifname,
                              host_ifindex=link.host_ifindex, host_mac=link.host_mac, gateway=alloc.gateway, mtu=mtu,
                              identity=self.identities.acquire(namespace, labels), labels=labels, node_ip=self.node.ip,
                              ips=[a.address for a in alloc.addresses], gateways=[a.gateway for a in alloc.addresses],
                              ingress_rate=ingress_rate, egress_rate=egress_rate)
                t2 = time.perf_counter()
                added = self._add_to_datapath(ep, member.host_ifname if member is not None else None)
                t3 = time.perf_counter()
                self.policy.endpoint_added(ep, added, t2)
                self.store.put(ep)
                t4 = time.perf_counter()
        self._timed(ep, t0, t1, t2, t3, t4)
        self.hook.novanet_endpoint_added(endpoint=ep)
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
    def _admitted(self, cid: str, ifname: str) -> Iterator[None]:
        """The container's host interface name reserved for this ADD until it is recorded.

        IPAM (the store locks itself) and the interface (the move into the pod netns waits out
        an RCU grace period) run outside the agent's lock, so concurrent ADDs overlap there; 20
        in flight ran one after another before. Meanwhile the ADD is in flight: a second ADD of
        the container is refused (try again later), a DEL of it waits, and reconcile and GC
        count its veth and address as in use."""
        hname = podnet.host_ifname(cid)
        with self.lock:
            busy = self.in_flight.get(hname)
            if busy is not None:
                raise CniFailure(cni.ERR_TRY_AGAIN_LATER, f"host interface {hname} is being added for container "
                                 f"{busy.container_id} interface {busy.ifname}; try again")
            self._make_room(cid, ifname, hname)
            self.in_flight[hname] = Attachment(cid, ifname)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight.pop(hname, None)
                self._landed.notify_all()

    def _make_room(self, cid: str, ifname: str, hname: str) -> None:
        existing = self.store.get(cid, ifname)
        if existing is not None:
            if podnet.host_link_exists(existing.host_ifname) is not None:
                raise CniFailure(cni.ERR_INTERFACE, f"container {cid} already has interface {ifname} (ADD without DEL)")
            self.endpoints.teardown(existing)
        clash = next((e for e in self.store.all() if e.host_ifname == hname), None)
        if clash is not None:
            # The guide's naming (nv + first 11 characters of the container id) cannot tell
            # these two apart; refuse rather than touch the other pod's interface.
            raise CniFailure(cni.ERR_INTERFACE, f"host interface name {hname} is already used by container "
                             f"{clash.container_id} ({clash.namespace}/{clash.pod}); container ids must differ "
                             "in their first 11 characters")

    def _allocate(self, req: IpamRequest) -> IpamAllocation:
        try:
            return self.ipam.allocate(req)
        except PoolExhausted as e:
            raise CniFailure(cni.ERR_IPAM_EXHAUSTED, str(e)) from None
        except IpamError as e:
            raise CniFailure(cni.ERR_IPAM, str(e)) from None

    def _plumb(self, pool: warmpool.WarmPool | None, cid: str, netns: str, ifname: str, alloc: IpamAllocation,
               mtu: int) -> tuple[podnet.PodLink, warmpool.Member | None]:
        """The pod's interface from a usable pool member, or made from scratch."""
        more = [(a.address, a.gateway) for a in alloc.addresses[1:]]
        try:
            pooled = (warmpool.plumb(pool, cid, netns, ifname, alloc.address, alloc.gateway, mtu, more)
                      if pool is not None else None)
            if pooled is not None:
                return pooled
            return podnet.create(cid, netns, ifname, alloc.address, alloc.gateway, mtu, more), None
        except podnet.PodNetError as e:
            self.ipam.release(cid, ifname)
            raise CniFailure(cni.ERR_INTERFACE, str(e)) from None

    def _add_to_datapath(self, ep: Endpoint, prewarmed: str | None) -> Any:
        try:
            # One all-or-nothing call: the dataplane writes the policy before the endpoint and
            # takes both out again if the endpoint fails.
            req: dict[str, Any] = {"endpoint": ep.to_dict(), "policy": self.policy.policy_for(ep)}
            if prewarmed is not None:
                req["prewarmed"] = prewarmed  # its attachment becomes the endpoint's
            return self.dataplane.call("dp.endpoint.add", req, wait=5.0)
        except (DataplaneUnavailable, Exception) as e:
            podnet.delete(ep.container_id)
            self.ipam.release(ep.container_id, ep.ifname)
            self.identities.release(ep.identity)
            code = cni.ERR_TRY_AGAIN_LATER if isinstance(e, DataplaneUnavailable) else cni.ERR_DATAPATH
            raise CniFailure(code, f"datapath did not accept endpoint {ep.ip}: {e}") from None

    def _timed(self, ep: Endpoint, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
        self.timings.append({"ipam": t1 - t0, "interface": t2 - t1, "datapath": t3 - t2, "record": t4 - t3})
        log.info("ADD %s/%s %s ip=%s identity=%d in %.1f ms (ipam %.1f, interface %.1f, datapath %.1f, record %.1f)",
                 ep.namespace, ep.pod, ep.container_id[:12], ",".join(ep.ips), ep.identity, (t4 - t0) * 1e3, (t1 - t0) * 1e3,
                 (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3)

    # ------------------------------------------------------------------ DEL, CHECK, STATUS, GC
    def delete(self, req: dict[str, Any]) -> None:
        cid, ifname = req["containerID"], req["ifname"]
        with self.lock:
            while podnet.host_ifname(cid) in self.in_flight:  # an ADD of it still in flight
                self._landed.wait(1.0)
            ep = self.store.get(cid, ifname)
            if ep is not None:
                self.endpoints.teardown(ep)
            else:
                # Unknown to us (already deleted, or never fully added): still free what may be left.
                podnet.delete(cid)
                self.ipam.release(cid, ifname)
        if ep is not None:
            self.hook.novanet_endpoint_removed(endpoint=ep)

    def check(self, req: dict[str, Any]) -> None:
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

    def status(self) -> None:
        if not self.ready():
            raise CniFailure(cni.ERR_NOT_AVAILABLE, "NovaNet agent is starting")
        if not self.dataplane.connected:
            raise CniFailure(cni.ERR_NOT_AVAILABLE, "NovaNet dataplane is not connected")
        st = self.ipam.status()
        if not st.get("ready", True):
            raise CniFailure(cni.ERR_NOT_AVAILABLE, f"IPAM not ready: {st}")
        if st.get("capacity") is not None and st.get("allocated", 0) >= st["capacity"]:
            raise CniFailure(cni.ERR_NOT_AVAILABLE, f"IP pool {st.get('pool')} is exhausted")

    def gc(self, req: dict[str, Any]) -> dict[str, Any]:
        valid_list = (req.get("config") or {}).get("cni.dev/valid-attachments", [])
        valid = {Attachment(a["containerID"], a.get("ifname", "eth0")) for a in valid_list}
        removed = []
        for ep in self.store.all():
            if Attachment(ep.container_id, ep.ifname) not in valid:
                self.delete({"containerID": ep.container_id, "ifname": ep.ifname})
                removed.append(ep.container_id)
        with self.lock:
            released = self.ipam.gc(valid | set(self.in_flight.values()))
        return {"endpointsRemoved": removed, "ipsReleased": [a.address for a in released]}

    def process_pending_deletes(self, cni_socket: str) -> None:
        """DELs that ``novanet-cni`` left next to the CNI socket while the agent was down."""
        for f, req in tombstones.ready(tombstones.directory(cni_socket)):
            try:
                self.delete(req)
                log.info("processed deferred DEL for %s/%s", req.get("containerID"), req.get("ifname"))
            except CniFailure as e:
                log.error("deferred DEL %s failed: %s", f.name, e)
            f.unlink(missing_ok=True)

    def watch_pending_deletes(self, cni_socket: str, stop: threading.Event) -> None:
        # A DEL deferred after the start-up pass (the socket was not listening yet) is carried out
        # now, not at the next restart (tombstones.py).
        while not stop.wait(1.0):
            try:
                self.process_pending_deletes(cni_socket)
            except Exception as e:  # this thread dying would leave every later tombstone unread
                log.exception("deferred DEL pass failed (%s: %s); retrying", type(e).__name__, e)
