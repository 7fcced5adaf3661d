"""The agent's Service sync against a real dataplane API server: what is sent, when, and after restarts.

The datapath behind the server keeps frontends in a dict: these tests are about the agent's
side of the contract (incremental sends, repair on reconnect, the kube-proxy-compatible mode),
not about load-balancing, which the lab tests check with real packets.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from novanet_core.agent.dataplane_client import DataplaneClient
from novanet_core.api.server import ApiServer
from novanet_core.backends import BackendContext
from novanet_core.builtin.kernel_datapath import KernelDatapath
from novanet_core.config.models import NovaNetConfig
from novanet_core.dataplane.service import DataplaneService
from novanet_core.services.resolve import compat_backends
from novanet_core.services.sync import ServiceSync
from novanet_core.state.model import ClusterState, StateEvent, parse_object
from novanet_core.types import NodeInfo, ServiceBackend, ServiceFrontend
from tests.unit.test_service_resolve import ep, eps, fronts, svc
from tests.unit.test_service_resolve import pod as pod_obj


class DictDatapath:
    """Frontends in a dict, every call counted."""

    name = "dict"

    def __init__(self) -> None:
        self.frontends: dict[str, dict[str, Any]] = {}
        self.backend_set: list[dict[str, Any]] | None = None
        self.calls: list[tuple[str, str]] = []

    def status(self) -> dict[str, Any]:
        return {}

    def upsert_service(self, frontend: ServiceFrontend) -> None:
        self.calls.append(("upsert", frontend.key))
        self.frontends[frontend.key] = frontend.to_dict()

    def delete_service(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.frontends.pop(key, None)

    def list_services(self) -> list[dict[str, Any]]:
        return list(self.frontends.values())

    def set_service_backends(self, backends: list[ServiceBackend]) -> None:
        self.calls.append(("backends", str(len(backends))))
        self.backend_set = [b.to_dict() for b in backends]


class Harness:
    def __init__(self, tmp_path, backend: Any, **config: Any) -> None:
        self.path = str(tmp_path / "dp.sock")
        self.backend = backend
        self.server = self._serve(backend)
        self.agent = SimpleNamespace(config=NovaNetConfig(**config), state=ClusterState(),
                                     node=NodeInfo("node-1", "172.30.0.2", "10.42.0.0/24"),
                                     dataplane=DataplaneClient(self.path))
        self.sync = ServiceSync(self.agent.state, self.agent.dataplane, self.agent.node,
                                self.agent.config.kubeProxyReplacement)

    def _serve(self, backend: Any) -> ApiServer:
        srv = ApiServer(self.path, DataplaneService(backend).router())
        srv.start()
        return srv

    def stop_dataplane(self) -> None:
        # A process that dies closes its end of every connection; the server object only stops
        # accepting, so close the agent's connection as the dying process would.
        self.server.stop()
        self.agent.dataplane.close()

    def restart_dataplane(self, backend: Any) -> None:
        self.stop_dataplane()
        self.backend = backend
        self.server = self._serve(backend)

    def event(self, typ: str, obj: dict) -> None:
        parsed = parse_object(obj)
        kind = type(parsed).__name__
        old = self.agent.state.table(kind).get(parsed.key)
        ev = StateEvent(typ, kind, parsed)
        self.agent.state.apply(ev)
        self.sync.apply_event(ev, old)

    def close(self) -> None:
        self.agent.dataplane.close()
        self.server.stop()


@pytest.fixture
def harness(tmp_path):
    made: list[Harness] = []

    def make(backend: Any = None, **config: Any) -> Harness:
        h = Harness(tmp_path, backend or DictDatapath(), **config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def load(h: Harness, *objs: dict) -> None:
    for o in objs:
        p = parse_object(o)
        h.agent.state.table(type(p).__name__)[p.key] = p


WEB = eps("web-1", "web", [ep("10.42.0.5", "node-1")])
API = eps("api-1", "api", [ep("10.42.1.7", "node-2")])


def test_start_sends_everything_then_only_what_an_event_changes(harness):
    h = harness()
    load(h, svc(), svc("api", clusterIP="10.96.0.21"), WEB, API)
    h.sync.start()
    assert sorted(h.backend.frontends) == ["shop/api:http/TCP", "shop/web:http/TCP"]
    assert h.sync.status()["programmedFrontends"] == 2
    h.backend.calls.clear()
    h.event("MODIFIED", eps("web-1", "web", [ep("10.42.0.5", "node-1"), ep("10.42.0.6", "node-1")]))
    assert h.backend.calls == [("upsert", "shop/web:http/TCP")]
    assert [b["ip"] for b in h.backend.frontends["shop/web:http/TCP"]["backends"]] == ["10.42.0.5", "10.42.0.6"]
    h.backend.calls.clear()
    h.event("MODIFIED", eps("web-1", "web", [ep("10.42.0.5", "node-1"), ep("10.42.0.6", "node-1")]))
    assert h.backend.calls == []  # nothing changed, nothing sent
    h.event("MODIFIED", svc(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    assert h.backend.calls == [("upsert", "shop/web:http/TCP/nodeport")]  # the ClusterIP frontend is unchanged
    h.backend.calls.clear()
    h.event("DELETED", svc())
    assert sorted(h.backend.calls) == [("delete", "shop/web:http/TCP"), ("delete", "shop/web:http/TCP/nodeport")]
    assert sorted(h.backend.frontends) == ["shop/api:http/TCP"]
    st = h.sync.status()
    assert st["programming"]["count"] == 3 and st["programming"]["p99"] is not None


def test_a_pod_change_re_resolves_named_ports(harness):
    h = harness()
    pod = {"kind": "Pod", "metadata": {"name": "a", "namespace": "shop"},
           "spec": {"nodeName": "node-1", "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}}
    load(h, svc(), eps("web-1", "web", [ep("10.42.0.5", "node-1", "a")], ports=[{"name": "http"}]), pod)
    h.sync.start()
    assert h.backend.frontends["shop/web:http/TCP"]["backends"][0]["port"] == 8080
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = 8081
    h.event("MODIFIED", pod)
    assert h.backend.frontends["shop/web:http/TCP"]["backends"][0]["port"] == 8081


def test_reconnect_repairs_a_fresh_dataplane_and_leaves_a_kept_one_alone(harness):
    h = harness()
    load(h, svc(), WEB)
    h.sync.start()
    kept = h.backend
    h.restart_dataplane(kept)  # maps survived the restart
    kept.calls.clear()
    h.sync.resync()
    assert kept.calls == []
    fresh = DictDatapath()
    h.restart_dataplane(fresh)
    h.sync.resync()
    assert fresh.calls == [("upsert", "shop/web:http/TCP")]
    fresh.frontends["stale/gone:80/TCP"] = {**fresh.frontends["shop/web:http/TCP"], "key": "stale/gone:80/TCP"}
    h.sync.resync()
    assert sorted(fresh.frontends) == ["shop/web:http/TCP"]


def test_changes_while_the_dataplane_is_down_are_sent_when_it_is_back(harness):
    h = harness()
    load(h, svc(), WEB)
    h.sync.start()
    h.stop_dataplane()
    h.event("MODIFIED", eps("web-1", "web", [ep("10.42.0.9", "node-1")]))
    assert h.sync.status()["dirty"]
    h.restart_dataplane(h.backend)
    h.sync.resync()
    assert [b["ip"] for b in h.backend.frontends["shop/web:http/TCP"]["backends"]] == ["10.42.0.9"]
    assert not h.sync.status()["dirty"]


def test_kube_proxy_compatible_mode_sends_backends_not_frontends(harness):
    h = harness(kubeProxyReplacement=False)
    load(h, svc(), WEB, API, svc("api", clusterIP="10.96.0.21"))
    h.sync.start()
    assert h.backend.frontends == {}
    assert [(b["ip"], b["port"], b["protocol"]) for b in h.backend.backend_set] == [
        ("10.42.0.5", 8080, "TCP"), ("10.42.1.7", 8080, "TCP")]
    h.event("DELETED", svc("api", clusterIP="10.96.0.21"))
    assert [b["ip"] for b in h.backend.backend_set] == ["10.42.0.5"]
    assert h.sync.status()["compatBackends"] == 1


def test_a_datapath_without_load_balancer_is_reported_not_retried(harness):
    h = harness(KernelDatapath(BackendContext(config=NovaNetConfig(), component="dataplane")))
    load(h, svc(), WEB)
    h.sync.start()
    st = h.sync.status()
    assert "has no service load-balancer" in st["unsupported"] and st["programmedFrontends"] == 0
    h.event("MODIFIED", eps("web-1", "web", [ep("10.42.0.6", "node-1")]))  # no error, nothing to retry
    compat = harness(KernelDatapath(BackendContext(config=NovaNetConfig(), component="dataplane")),
                     kubeProxyReplacement=False)
    load(compat, svc(), WEB)
    compat.sync.start()
    assert compat.sync.status()["unsupported"] == "" and compat.sync.status()["compatBackends"] == 1


def _random_object(rng: random.Random, kind: str, i: int) -> dict:
    """One of a small pool of Services, slices and pods, so that random events keep hitting the
    same objects: a slice moves between Services, a pod's named port or node changes under a
    slice that names it, an endpoint flips ready/terminating."""
    if kind == "Service":
        ports = [{"name": "http", "port": 80, "targetPort": rng.choice(["http", 8080])}]
        if rng.random() < 0.4:
            ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53})
        spec: dict[str, Any] = {"clusterIP": f"10.96.0.{30 + i}", "ports": ports,
                                "internalTrafficPolicy": rng.choice(["Cluster", "Local"])}
        if rng.random() < 0.4:
            spec.update(type="NodePort", externalTrafficPolicy=rng.choice(["Cluster", "Local"]))
            for n, p in enumerate(ports):
                p["nodePort"] = 30000 + 10 * i + n
        return svc(f"s{i}", **spec)
    if kind == "EndpointSlice":
        endpoints = []
        for j in rng.sample(range(5), rng.randint(0, 4)):
            e: dict[str, Any] = {"addresses": [f"10.42.0.{10 + j}"],
                                 "conditions": {"ready": rng.random() < 0.7, "terminating": rng.random() < 0.2},
                                 "targetRef": {"kind": "Pod", "namespace": "shop", "name": f"p{j}"}}
            node = rng.choice(["node-1", "node-2", None])
            if node is not None:
                e["nodeName"] = node
            endpoints.append(e)
        ports = [{"name": "http"} if rng.random() < 0.5 else {"name": "http", "port": 8080}]
        if rng.random() < 0.5:
            ports.append({"name": "dns", "port": 53, "protocol": "UDP"})
        return eps(f"sl{i}", f"s{rng.randrange(4)}", endpoints, ports=ports)
    return pod_obj(f"p{i}", rng.choice(["node-1", "node-2"]),
                   [{"name": "http", "containerPort": rng.choice([8080, 8081, 9090])}] if rng.random() < 0.8 else [])


@pytest.mark.parametrize("replace", [True, False])
def test_incremental_sync_matches_a_full_resolution_after_every_event(harness, replace):
    """Whatever the order of Service, slice and pod changes, what the datapath holds after each
    event equals resolving the whole state from scratch: an event whose Services were not all
    re-resolved (a missed index entry) leaves a difference here."""
    rng = random.Random(9)
    h = harness(kubeProxyReplacement=replace)
    h.sync.start()
    pools = {"Service": 4, "EndpointSlice": 6, "Pod": 5}
    for _ in range(150):
        kind = rng.choice(list(pools))
        i = rng.randrange(pools[kind])
        obj = _random_object(rng, kind, i)
        exists = parse_object(obj).key in h.agent.state.table(kind)
        if exists and rng.random() < 0.25:
            h.event("DELETED", obj)
        else:
            h.event("MODIFIED" if exists else "ADDED", obj)
        want = fronts(h.agent.state)
        if replace:
            assert h.backend.frontends == {k: fe.to_dict() for k, fe in want.items()}
            st = h.sync.status()
            assert st["frontends"] == st["programmedFrontends"] == len(want)
            assert all(f["programmed"] for f in h.sync.list_frontends())
        else:
            assert (h.backend.backend_set or []) == [b.to_dict() for b in compat_backends(h.agent.state, "node-1")]


def test_programmed_count_follows_acknowledgements_and_deletions(harness):
    h = harness()
    load(h, svc(), svc("api", clusterIP="10.96.0.21"), WEB, API)
    h.sync.start()
    assert h.sync.status()["programmedFrontends"] == 2
    h.stop_dataplane()
    h.event("MODIFIED", eps("web-1", "web", [ep("10.42.0.9", "node-1")]))  # resolved, not acknowledged
    st = h.sync.status()
    assert st["frontends"] == 2 and st["programmedFrontends"] == 1
    assert {f["key"]: f["programmed"] for f in h.sync.list_frontends()} == {
        "shop/api:http/TCP": True, "shop/web:http/TCP": False}
    h.restart_dataplane(h.backend)
    h.sync.resync()
    assert h.sync.status()["programmedFrontends"] == 2
    h.event("DELETED", svc("api", clusterIP="10.96.0.21"))
    st = h.sync.status()
    assert st["frontends"] == st["programmedFrontends"] == 1
