"""Hosts the selected datapath backend and serves the agent-facing dataplane API.

Protocol (version 1 of the local API, see novanet_core.api.protocol), methods:

  dp.status                      -> backend status + {"datapath", "generation", "pid"}
  dp.configure {settings}        -> node settings (node IP, PodCIDR, gateway, mode, defaultDeny, ...)
  dp.endpoint.upsert {endpoint}  -> make a local endpoint reachable (Endpoint as a dict)
  dp.endpoint.delete {ip, host_ifname?}
  dp.endpoint.list               -> endpoints read back from the live datapath
  dp.remote.upsert {remote} / dp.remote.delete {ip}
  dp.service.upsert {frontend}   -> create or replace one Service frontend (ServiceFrontend as a dict)
  dp.service.delete {key}        -> remove one frontend (idempotent)
  dp.service.list                -> frontends read back from the live datapath
  dp.service.backends {backends} -> kube-proxy compatibility: every Service backend (ip, port, protocol)

A datapath that has no service load-balancer answers ``dp.service.upsert`` with error
``unsupported`` (docs/services.md).

plus whatever the active datapath plugin adds through ``novanet_register_api(component="dataplane")``.
``generation`` changes every time the process starts, so the agent can tell that the dataplane
restarted and re-push what it owns.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from novanet_core.api.protocol import ApiError
from novanet_core.api.router import ApiRouter
from novanet_core.backends import DatapathUnsupported
from novanet_core.dataplane.service_params import parse_backend_set, parse_frontend
from novanet_core.types import Endpoint, RemoteEndpoint

log = logging.getLogger("novanet.dataplane")


class DataplaneService:
    def __init__(self, backend: Any):
        self.backend = backend
        self.generation = int(time.time() * 1000) ^ os.getpid()
        self.lock = threading.RLock()
        self.settings: dict[str, Any] = {}

    def router(self) -> ApiRouter:
        r = ApiRouter()
        r.add("dp.status", self.status, doc="datapath status")
        r.add("dp.configure", self.configure, doc="node settings")
        r.add("dp.endpoint.upsert", self.endpoint_upsert, doc="add or update a local endpoint")
        r.add("dp.endpoint.delete", self.endpoint_delete, doc="remove a local endpoint")
        r.add("dp.endpoint.list", self.endpoint_list, doc="endpoints from the live datapath")
        r.add("dp.remote.upsert", self.remote_upsert, doc="add or update a pod on another node")
        r.add("dp.remote.delete", self.remote_delete, doc="remove a pod on another node")
        r.add("dp.service.upsert", self.service_upsert, doc="add or replace a Service frontend")
        r.add("dp.service.delete", self.service_delete, doc="remove a Service frontend")
        r.add("dp.service.list", self.service_list, doc="Service frontends from the live datapath")
        r.add("dp.service.backends", self.service_backends,
              doc="kube-proxy compatibility: the Service backends whose replies must pass conntrack")
        r.add("dp.methods", lambda p: r.methods(), doc="list methods")
        return r

    def status(self, p: dict[str, Any]) -> dict[str, Any]:
        st = dict(self.backend.status())
        st.setdefault("attachMode", st.get("attach_mode", ""))
        st.update(datapath=self.backend.name, generation=self.generation, pid=os.getpid())
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

    def configure(self, p: dict[str, Any]) -> None:
        settings = p.get("settings")
        if not isinstance(settings, dict):
            raise ApiError("invalid_params", "settings: must be an object")
        with self.lock:
            self.backend.configure(settings)
            self.settings = settings

    def endpoint_upsert(self, p: dict[str, Any]) -> None:
        d = p.get("endpoint")
        if not isinstance(d, dict):
            raise ApiError("invalid_params", "endpoint: must be an object")
        try:
            ep = Endpoint.from_dict(d)
        except TypeError as e:
            raise ApiError("invalid_params", f"endpoint: {e}") from None
        with self.lock:
            self.backend.upsert_endpoint(ep)

    def endpoint_delete(self, p: dict[str, Any]) -> None:
        ip = p.get("ip")
        if not isinstance(ip, str):
            raise ApiError("invalid_params", "ip: must be a string")
        with self.lock:
            self.backend.delete_endpoint(ip, p.get("host_ifname"))

    def remote_upsert(self, p: dict[str, Any]) -> None:
        d = p.get("remote")
        if not isinstance(d, dict):
            raise ApiError("invalid_params", "remote: must be an object")
        try:
            rem = RemoteEndpoint(**d)
        except TypeError as e:
            raise ApiError("invalid_params", f"remote: {e}") from None
        with self.lock:
            self.backend.upsert_remote(rem)

    def remote_delete(self, p: dict[str, Any]) -> None:
        ip = p.get("ip")
        if not isinstance(ip, str):
            raise ApiError("invalid_params", "ip: must be a string")
        with self.lock:
            self.backend.delete_remote(ip)

    # ------------------------------------------------------------------ services
    def _services(self, method: str, *args: Any) -> Any:
        fn = getattr(self.backend, method, None)
        if fn is None:
            raise ApiError("unsupported", f"datapath {self.backend.name} does not implement {method}")
        try:
            with self.lock:
                return fn(*args)
        except DatapathUnsupported as e:
            raise ApiError("unsupported", str(e)) from None

    def service_upsert(self, p: dict[str, Any]) -> None:
        self._services("upsert_service", parse_frontend(p.get("frontend")))

    def service_delete(self, p: dict[str, Any]) -> None:
        key = p.get("key")
        if not isinstance(key, str) or not key:
            raise ApiError("invalid_params", "key: must be a non-empty string")
        self._services("delete_service", key)

    def service_list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self._services("list_services"))

    def service_backends(self, p: dict[str, Any]) -> None:
        self._services("set_service_backends", parse_backend_set(p.get("backends")))
