"""List-then-watch of the kinds the agent needs (Nodes, Namespaces, Pods, NetworkPolicies, Services,
EndpointSlices), with resourceVersion bookkeeping.

Each kind is listed once (``snapshot``), then watched from the list's resourceVersion by its own
thread; events go through one queue so the agent sees a single ordered stream. A watch that
expires (``410 Gone``: the server compacted past our resourceVersion) is recovered by re-listing
that kind and emitting the difference, so no change is ever lost or invented. After each batch of
events the source emits ``SYNCED`` with a counter, which the agent reports as ``stateVersion``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from novanet_core.state.model import ClusterState, ObjectError, StateEvent, parse_object

log = logging.getLogger(__name__)


class _Gone(Exception):
    """The watch's resourceVersion was compacted away (HTTP 410 in the stream)."""


@dataclass
class KindAPI:
    kind: str
    list_fn: Callable[..., Any]


def _load_client(kubeconfig: str | None, host: str | None, ca_file: str | None = None,
                 insecure: bool = False) -> tuple[Any, Any]:
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        # The client verifies the server's certificate by default (against the system CAs, or
        # caFile); turning that off is an explicit setting and is logged on every start.
        cfg.verify_ssl = not insecure
        if ca_file:
            cfg.ssl_ca_cert = ca_file
        if insecure and host.startswith("https://"):
            log.warning("kubernetes-source: insecureSkipTLSVerify is set: the API server's certificate "
                        "is NOT verified (anyone on the path can feed this node its state)")
        api = client.ApiClient(cfg)
    elif kubeconfig:
        api = config.new_client_from_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
        api = client.ApiClient()
    return client.CoreV1Api(api), client.NetworkingV1Api(api), client.DiscoveryV1Api(api)


class KubernetesSource:
    def __init__(self, kubeconfig: str | None = None, host: str | None = None, watch_timeout: int = 60,
                 ca_file: str | None = None, insecure_skip_tls_verify: bool = False):
        core, net, discovery = _load_client(kubeconfig, host, ca_file, insecure_skip_tls_verify)
        self.kinds = [
            KindAPI("Node", core.list_node),
            KindAPI("Namespace", core.list_namespace),
            KindAPI("Pod", core.list_pod_for_all_namespaces),
            KindAPI("NetworkPolicy", net.list_network_policy_for_all_namespaces),
            KindAPI("Service", core.list_service_for_all_namespaces),
            KindAPI("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces),
        ]
        self.watch_timeout = watch_timeout
        self._rv: dict[str, str] = {}
        self._known: dict[str, dict[str, Any]] = {k.kind: {} for k in self.kinds}
        self._q: queue.Queue[StateEvent | Exception] = queue.Queue()
        self._version = 0
        self.errors: list[str] = []

    # ---------------------------------------------------------------- listing
    def _list(self, k: KindAPI) -> dict[str, Any]:
        resp = k.list_fn(_preload_content=False)
        body = json.loads(resp.data)
        self._rv[k.kind] = body.get("metadata", {}).get("resourceVersion", "")
        objs = {}
        for raw in body.get("items", []):
            obj = self._parse({**raw, "kind": k.kind})
            if obj is not None:
                objs[obj.key] = obj
        return objs

    def _parse(self, raw: dict[str, Any]) -> Any:
        try:
            return parse_object(raw)
        except ObjectError as e:
            log.error("object rejected: %s", e)
            self.errors = (self.errors + [str(e)])[-50:]
            return None

    def snapshot(self) -> ClusterState:
        st = ClusterState()
        for k in self.kinds:
            self._known[k.kind] = self._list(k)
            st.table(k.kind).update(self._known[k.kind])
        self._version += 1
        st.version = self._version
        return st

    # ---------------------------------------------------------------- watching
    def _relist_diff(self, k: KindAPI) -> None:
        now = self._list(k)
        old = self._known[k.kind]
        for key, obj in now.items():
            if key not in old:
                self._q.put(StateEvent("ADDED", k.kind, obj))
            elif old[key] != obj:
                self._q.put(StateEvent("MODIFIED", k.kind, obj))
        for key, obj in old.items():
            if key not in now:
                self._q.put(StateEvent("DELETED", k.kind, obj))
        self._known[k.kind] = now

    def _watch_kind(self, k: KindAPI, stop: threading.Event) -> None:
        # The raw watch stream, not kubernetes.watch.Watch: that helper deserializes into typed
        # models (which reject objects our parser handles with field-path errors) and its
        # non-deserializing mode cannot report 410 Gone. We need raw objects and the 410.
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        while not stop.is_set():
            try:
                resp = k.list_fn(watch=True, resource_version=self._rv.get(k.kind, ""),
                                 timeout_seconds=self.watch_timeout, allow_watch_bookmarks=True,
                                 _preload_content=False)
                try:
                    for line in iter_resp_lines(resp):
                        if stop.is_set():
                            return
                        self._handle_watch_line(k, json.loads(line))
                finally:
                    resp.release_conn()
            except _Gone:
                log.info("watch of %s expired (410 Gone): re-listing", k.kind)
                try:
                    self._relist_diff(k)
                except Exception as e:  # the API server went away meanwhile: retry the whole cycle
                    log.warning("re-list of %s failed: %s; retrying", k.kind, e)
                    stop.wait(1)
            except ApiException as e:
                log.warning("watch of %s failed: %s; retrying", k.kind, e)
                stop.wait(1)
            except Exception as e:  # network errors: keep watching, never give up on the API server
                log.warning("watch of %s interrupted: %s; retrying", k.kind, e)
                stop.wait(1)

    def _handle_watch_line(self, k: KindAPI, ev: dict[str, Any]) -> None:
        typ, raw = ev.get("type"), ev.get("object") or {}
        if typ == "ERROR":
            if raw.get("code") == 410:
                raise _Gone()
            log.error("watch %s error: %s", k.kind, raw.get("message", raw))
            return
        rv = raw.get("metadata", {}).get("resourceVersion")
        if rv:
            self._rv[k.kind] = rv
        if typ not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK: only the resourceVersion matters
        obj = self._parse({**raw, "kind": k.kind})
        if obj is None:
            return
        if typ == "DELETED":
            self._known[k.kind].pop(obj.key, None)
        else:
            self._known[k.kind][obj.key] = obj
        self._q.put(StateEvent(typ, k.kind, obj))

    def watch(self, stop: threading.Event) -> Iterator[StateEvent]:
        threads = [threading.Thread(target=self._watch_kind, args=(k, stop), daemon=True, name=f"watch-{k.kind}")
                   for k in self.kinds]
        for t in threads:
            t.start()
        while not stop.is_set():
            try:
                ev = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [ev]
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            yield from (e for e in batch if isinstance(e, StateEvent))
            self._version += 1
            yield StateEvent("SYNCED", "", None, version=self._version)
