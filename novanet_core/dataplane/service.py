"""Hosts the selected datapath backend and serves the agent-facing dataplane API.

Protocol (version 1 of the local API, see novanet_core.api.protocol). Core methods, which every
datapath serves:

  dp.status                      -> backend status + {"datapath", "capabilities", "generation", "pid"}
  dp.configure {settings}        -> node settings (node IP, PodCIDR, gateway, mode, defaultDeny, ...)
  dp.endpoint.add {endpoint, policy?}
                                 -> a new local endpoint and its compiled policy, all or nothing
  dp.endpoint.upsert {endpoint}  -> make a local endpoint reachable (Endpoint as a dict)
  dp.endpoint.delete {ip, host_ifname?, ips?}   (ips: every address of a dual-stack endpoint)
  dp.endpoint.list               -> endpoints read back from the live datapath
  dp.remote.upsert {remote} / dp.remote.delete {ip}
  dp.remote.batch {upsert: [remote], delete: [ip]}
                                 -> many of the two in one request (the agent's full sync)

Section methods (``DATAPATH_SECTIONS`` in novanet_core.backends), answered ``unsupported`` by a
datapath that does not implement the section:

  policy   dp.policy.apply {endpoints, delete, full}   (novanet_core.policy.wire; alias policy.apply)
           dp.policy.list                 -> the policy as the live datapath holds it
  flows    dp.flows {identity, drops_only, follow, limit, filter}   (a stream)
  stats    dp.stats                                        -> traffic, drops, flow events, maps
  service  dp.service.upsert {frontend} / dp.service.delete {key} / dp.service.list
           dp.service.backends {backends} -> kube-proxy compatibility (docs/services.md)

plus whatever the active datapath plugin adds through ``novanet_register_api(component="dataplane")``.
``generation`` changes every time the process starts, so the agent can tell that the dataplane
restarted and re-push what it owns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any

from novanet_core.api.protocol import ApiError
from novanet_core.api.router import ApiRouter
from novanet_core.backends import ConfigError, DatapathUnsupported
from novanet_core.dataplane.endpoint_params import check_settings, parse_endpoint, parse_remote
from novanet_core.dataplane.service_params import parse_backend_set, parse_frontend
from novanet_core.policy.wire import WireError, decode_endpoint, decode_update
from novanet_core.types import Endpoint

log = logging.getLogger("novanet.dataplane")


class DataplaneService:
    def __init__(self, backend: Any):
        self.backend = backend
        self.generation = int(time.time() * 1000) ^ os.getpid()
        self.lock = threading.RLock()
        self.settings: dict[str, Any] = {}
        self.capabilities = frozenset(getattr(backend, "capabilities", ()))
        self.api_server: Any = None  # set by main: its limits and refusal counters go in dp.status

    def router(self) -> ApiRouter:
        r = ApiRouter()
        r.add("dp.status", self.status, doc="datapath status")
        r.add("dp.configure", self.configure, doc="node settings")
        r.add("dp.endpoint.add", self.endpoint_add, doc="add a new local endpoint and its policy, all or nothing")
        r.add("dp.endpoint.upsert", self.endpoint_upsert, doc="add or update a local endpoint")
        r.add("dp.endpoint.delete", self.endpoint_delete, doc="remove a local endpoint")
        r.add("dp.endpoint.list", self.endpoint_list, doc="endpoints from the live datapath")
        r.add("dp.remote.upsert", self.remote_upsert, doc="add or update a pod on another node")
        r.add("dp.remote.delete", self.remote_delete, doc="remove a pod on another node")
        r.add("dp.remote.batch", self.remote_batch, doc="add, update and remove many pods on other nodes at once")
        r.add("dp.policy.apply", self.policy_apply, doc="program compiled NetworkPolicy for local endpoints")
        # The name the ebpf plugin served before policy became a core section; kept for callers of it.
        r.add("policy.apply", self.policy_apply, doc="alias of dp.policy.apply")
        r.add("dp.policy.list", self.policy_list, doc="NetworkPolicy as the live datapath holds it")
        r.add("dp.flows", self.flows, stream=True, doc="flow and drop events")
        r.add("dp.stats", self.stats, doc="what the datapath counted: traffic per direction, drops, flow events, maps")
        r.add("dp.service.upsert", self.service_upsert, doc="add or replace a Service frontend")
        r.add("dp.service.delete", self.service_delete, doc="remove a Service frontend")
        r.add("dp.service.list", self.service_list, doc="Service frontends from the live datapath")
        r.add("dp.service.backends", self.service_backends,
              doc="kube-proxy compatibility: the Service backends whose replies must pass conntrack")
        r.add("dp.prewarm.attach", self.prewarm_attach, doc="attach the programs to a pooled host veth")
        r.add("dp.prewarm.release", self.prewarm_release, doc="detach them from a pooled host veth")
        r.add("dp.methods", lambda p: r.methods(), doc="list methods")
        return r

    def status(self, p: dict[str, Any]) -> dict[str, Any]:
        if _flag(p, "brief"):
            # What a liveness poll needs (the agent asks twice a second): the backend's full status
            # lists every program and link, a cost that grows with the pods on the node.
            return {"datapath": self.backend.name, "capabilities": sorted(self.capabilities),
                    "generation": self.generation, "pid": os.getpid()}
        st = dict(self.backend.status())
        st.setdefault("attachMode", st.get("attach_mode", ""))
        # ipFamilies: what the agent checks the node's PodCIDRs against (a datapath that does not
        # name its families serves IPv4 only).
        st.update(datapath=self.backend.name, capabilities=sorted(self.capabilities), generation=self.generation,
                  pid=os.getpid(), ipFamilies=sorted(getattr(self.backend, "ip_families", (4,))))
        if self.api_server is not None:
            st["api"] = self.api_server.stats()
        return st

    def endpoint_list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """The backend's live view, with the documented keys guaranteed (ip, identity, mac,
        host_ifname, host_ifindex, node_ip, local) whatever names a backend uses internally."""
        out = []
        for e in self.backend.list_endpoints():
            d = dict(e)
            d.setdefault("host_ifindex", d.get("ifindex", 0))
            d.setdefault("host_ifname", "")
            d.setdefault("local", True)
            out.append(d)
        return out

    def _apply(self, fn: Any, *args: Any) -> Any:
        # A well-formed request the backend could not carry out (an interface that is gone, the
        # kernel refusing an attach): error code "datapath", not "internal", which means a bug.
        try:
            with self.lock:
                return fn(*args)
        except (ConfigError, ValueError) as e:  # the backend's own field checks (message names the field)
            raise ApiError("invalid_params", str(e)) from None
        except (RuntimeError, OSError) as e:
            log.warning("%s failed: %s: %s", getattr(fn, "__name__", fn), type(e).__name__, e)
            raise ApiError("datapath", f"{type(e).__name__}: {e}") from None

    def configure(self, p: dict[str, Any]) -> None:
        settings = check_settings(p.get("settings"))
        self._apply(self.backend.configure, settings)
        self.settings = settings

    @staticmethod
    def _endpoint(d: Any) -> Endpoint:
        return parse_endpoint(d)

    def endpoint_upsert(self, p: dict[str, Any]) -> None:
        self._apply(self.backend.upsert_endpoint, self._endpoint(p.get("endpoint")))

    def endpoint_add(self, p: dict[str, Any]) -> dict[str, Any]:
        """A new endpoint with its compiled policy (wire form), all or nothing.

        The policy goes in first, so the endpoint never forwards unpoliced; if the endpoint then
        fails, both are taken out again before the error is answered. A datapath without the
        policy section gets the endpoint alone (``{"policy": false}``): what it enforces is in
        its ``capabilities``. Returns ``{"policy": bool, "policyApplied": {counters}}``.
        """
        ep = self._endpoint(p.get("endpoint"))
        pol = None
        if p.get("policy") is not None:
            try:
                pol = decode_endpoint(p["policy"], "policy")
            except WireError as e:
                raise ApiError("invalid_params", str(e)) from None
            if pol.ip != ep.ip:
                raise ApiError("invalid_params", f"policy.ip: {pol.ip!r} is not the endpoint's ip {ep.ip!r}")
        enforce = pol is not None and "policy" in self.capabilities
        applied: dict[str, Any] = {}
        pooled = p.get("prewarmed")
        if pooled is not None and (not isinstance(pooled, str) or not pooled):
            raise ApiError("invalid_params", "prewarmed: must be the pooled host interface's name")
        with self.lock:
            if pooled is not None and "prewarm" in self.capabilities:
                self._section("prewarm", "adopt_interface", pooled, ep.host_ifname, locked=False)
            if enforce:
                assert pol is not None
                # every address of the pod gets the same policy (one identity, one set per direction)
                pols = [pol if a == pol.ip else dataclasses.replace(pol, ip=a) for a in ep.ips]
                applied = dict(self._section("policy", "apply_policy", pols, (), False))
            try:
                self.backend.upsert_endpoint(ep)
            except BaseException as e:
                self._undo_add(ep, enforce)
                if isinstance(e, (RuntimeError, OSError)):  # see _apply
                    raise ApiError("datapath", f"{type(e).__name__}: {e}") from None
                raise
        return {"policy": enforce, "policyApplied": applied}

    def _undo_add(self, ep: Endpoint, policy: bool) -> None:
        # Best effort, and never masking the error that made the ADD fail.
        def endpoint() -> None:
            for ip in ep.ips:
                self.backend.delete_endpoint(ip, ep.host_ifname)

        for what, fn in (("endpoint", endpoint),
                         ("policy", lambda: self.backend.apply_policy((), tuple(ep.ips), False) if policy else None)):
            try:
                fn()
            except Exception as e:
                log.error("rolling back the %s of failed ADD %s: %s: %s", what, ep.ip, type(e).__name__, e)

    def endpoint_delete(self, p: dict[str, Any]) -> None:
        ip = p.get("ip")
        if not isinstance(ip, str):
            raise ApiError("invalid_params", "ip: must be a string")
        ifname = p.get("host_ifname")
        if ifname is not None and not isinstance(ifname, str):
            raise ApiError("invalid_params", "host_ifname: must be a string")
        ips = p.get("ips") or [ip]
        if not isinstance(ips, list) or not all(isinstance(x, str) for x in ips) or ip not in ips:
            raise ApiError("invalid_params", "ips: must be a list of strings holding ip")
        # The other families first: the datapath may release the interface with the last address.
        for other in [x for x in ips if x != ip] + [ip]:
            self._apply(self.backend.delete_endpoint, other, ifname)

    def remote_upsert(self, p: dict[str, Any]) -> None:
        self._apply(self.backend.upsert_remote, parse_remote(p.get("remote")))

    def remote_delete(self, p: dict[str, Any]) -> None:
        ip = p.get("ip")
        if not isinstance(ip, str):
            raise ApiError("invalid_params", "ip: must be a string")
        self._apply(self.backend.delete_remote, ip)

    def remote_batch(self, p: dict[str, Any]) -> dict[str, int]:
        """Deletes, then upserts, under one lock: a full sync of 30,000 remote pods one request
        each spent its time in round trips and the socket's rate limit, not in the map.

        Every entry is checked before any is applied, so a malformed entry changes nothing.
        """
        ups = p.get("upsert") if p.get("upsert") is not None else []
        dels = p.get("delete") if p.get("delete") is not None else []
        if not isinstance(ups, list):
            raise ApiError("invalid_params", "upsert: must be a list of remote endpoints")
        if not isinstance(dels, list) or not all(isinstance(x, str) for x in dels):
            raise ApiError("invalid_params", "delete: must be a list of strings")
        remotes = [parse_remote(d, f"upsert[{i}]") for i, d in enumerate(ups)]

        def remote_batch() -> None:
            for ip in dels:
                self.backend.delete_remote(ip)
            for r in remotes:
                self.backend.upsert_remote(r)

        self._apply(remote_batch)
        return {"upserted": len(remotes), "deleted": len(dels)}

    # ------------------------------------------------------------------ sections
    def _section(self, section: str, method: str, *args: Any, locked: bool = True) -> Any:
        """Call one section method of the backend; ``unsupported`` when the datapath lacks it."""
        fn = getattr(self.backend, method, None)
        if fn is None:
            raise ApiError("unsupported", f"datapath {self.backend.name} does not implement the {section} section "
                           f"({method})")
        try:
            if not locked:
                return fn(*args)
            with self.lock:
                return fn(*args)
        except DatapathUnsupported as e:
            raise ApiError("unsupported", str(e)) from None
        except (ConfigError, ValueError) as e:
            raise ApiError("invalid_params", str(e)) from None

    # prewarm
    def _ifname(self, p: dict[str, Any]) -> str:
        name = p.get("host_ifname")
        if not isinstance(name, str) or not 0 < len(name) < 16:
            raise ApiError("invalid_params", "host_ifname: must be an interface name (1-15 characters)")
        return name

    def prewarm_attach(self, p: dict[str, Any]) -> None:
        name = self._ifname(p)
        try:
            self._section("prewarm", "prewarm_interface", name)
        except (RuntimeError, OSError) as e:  # e.g. the interface vanished: see _apply
            raise ApiError("datapath", f"{type(e).__name__}: {e}") from None

    def prewarm_release(self, p: dict[str, Any]) -> None:
        self._section("prewarm", "release_interface", self._ifname(p))

    # policy
    def policy_apply(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            u = decode_update(p)
        except WireError as e:
            raise ApiError("invalid_params", str(e)) from None
        return dict(self._section("policy", "apply_policy", u.upserts, u.deletes, u.full))

    def policy_list(self, p: dict[str, Any]) -> dict[str, Any]:
        return dict(self._section("policy", "list_policy"))

    # flows: a stream, outside the lock (a follower may read for hours)
    def flows(self, p: dict[str, Any]) -> Any:
        flt = p.get("filter")
        if flt is not None and not isinstance(flt, dict):
            raise ApiError("invalid_params", "filter: must be an object")
        args = (_num(p, "identity", 0, 0xFFFFFFFF), _flag(p, "drops_only"), _flag(p, "follow"),
                _num(p, "limit", 100, 1 << 20))
        return self._section("flows", "flow_events", *args, *((flt,) if flt else ()), locked=False)

    # stats: counters only, no lock (reads never race a write into something inconsistent)
    def stats(self, p: dict[str, Any]) -> dict[str, Any]:
        return dict(self._section("stats", "datapath_stats", locked=False))

    # service
    def service_upsert(self, p: dict[str, Any]) -> None:
        try:
            self._section("service", "upsert_service", parse_frontend(p.get("frontend")))
        except RuntimeError as e:  # e.g. the service maps full: the frontend failed closed
            raise ApiError("datapath", str(e)) from None

    def service_delete(self, p: dict[str, Any]) -> None:
        key = p.get("key")
        if not isinstance(key, str) or not key:
            raise ApiError("invalid_params", "key: must be a non-empty string")
        self._section("service", "delete_service", key)

    def service_list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self._section("service", "list_services"))

    def service_backends(self, p: dict[str, Any]) -> None:
        self._section("service", "set_service_backends", parse_backend_set(p.get("backends")))


def _flag(p: dict[str, Any], key: str) -> bool:
    v = p.get(key, False)
    if not isinstance(v, bool):
        raise ApiError("invalid_params", f"{key}: {v!r} is not a boolean")
    return v


def _num(p: dict[str, Any], key: str, default: int, hi: int) -> int:
    v = p.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise ApiError("invalid_params", f"{key}: {v!r} is not an integer in 0..{hi}")
    return v
