"""The datapath contract's Services section: wire form, validation, and the kernel datapath's answer."""

from __future__ import annotations

import pytest

from novanet_core.api.protocol import ApiError
from novanet_core.backends import BackendContext
from novanet_core.builtin.kernel_datapath import KernelDatapath
from novanet_core.config.models import NovaNetConfig
from novanet_core.dataplane.service import DataplaneService
from novanet_core.types import ServiceBackend, ServiceFrontend, frontend_key


def _frontend(**kw) -> dict:
    fe = ServiceFrontend(key=frontend_key("default", "web", "http", 80, "TCP", False), namespace="default",
                         name="web", port_name="http", protocol="TCP", ip="10.96.0.20", port=80, kind="ClusterIP",
                         backends=[ServiceBackend(ip="10.42.0.5", port=8080, node_name="node-1", local=True),
                                   ServiceBackend(ip="10.42.1.7", port=8080, node_name="node-2",
                                                  ready=False, terminating=True)],
                         affinity_timeout=10800)
    d = fe.to_dict()
    d.update(kw)
    return d


def _call(svc: DataplaneService, method: str, params: dict):
    handler, _, _ = svc.router().get(method)
    return handler(params)


@pytest.fixture
def kernel_dp() -> DataplaneService:
    return DataplaneService(KernelDatapath(BackendContext(config=NovaNetConfig(), component="dataplane")))


def test_frontend_round_trip():
    d = _frontend()
    fe = ServiceFrontend.from_dict(d)
    assert fe.to_dict() == d
    assert fe.key == "default/web:http/TCP"
    assert [b.selectable for b in fe.backends] == [True, False]
    assert frontend_key("kube-system", "kube-dns", "", 53, "UDP", True) == "kube-system/kube-dns:53/UDP/nodeport"


@pytest.mark.parametrize("patch,path", [
    ({"kind": "LoadBalancer"}, "frontend.kind"),
    ({"protocol": "ICMP"}, "frontend.protocol"),
    ({"ip": "10.96.0.300"}, "frontend.ip"),
    ({"port": 0}, "frontend.port"),
    ({"key": ""}, "frontend.key"),
    ({"affinity_timeout": 86401}, "frontend.affinity_timeout"),
    ({"external_local": "yes"}, "frontend.external_local"),
    ({"backends": {"ip": "10.42.0.5"}}, "frontend.backends"),
])
def test_bad_frontend_names_the_field(kernel_dp, patch, path):
    with pytest.raises(ApiError) as ei:
        _call(kernel_dp, "dp.service.upsert", {"frontend": _frontend(**patch)})
    assert ei.value.code == "invalid_params"
    assert ei.value.message.startswith(path + ":"), ei.value.message


def test_bad_backend_names_its_index(kernel_dp):
    d = _frontend()
    d["backends"][1]["port"] = 70000
    with pytest.raises(ApiError, match=r"^frontend\.backends\[1\]\.port: 70000"):
        _call(kernel_dp, "dp.service.upsert", {"frontend": d})
    d = _frontend()
    d["backends"][0]["protocol"] = "UDP"
    with pytest.raises(ApiError, match=r"^frontend\.backends\[0\]\.protocol: 'UDP' differs"):
        _call(kernel_dp, "dp.service.upsert", {"frontend": d})
    d = _frontend(ip="fd00:96::a")  # an IPv6 frontend with IPv4 backends
    with pytest.raises(ApiError, match=r"^frontend\.backends\[0\]\.ip: '.*' is not an IPv6 address"):
        _call(kernel_dp, "dp.service.upsert", {"frontend": d})
    with pytest.raises(ApiError, match=r"^backends\[0\]\.ip: "):
        _call(kernel_dp, "dp.service.backends", {"backends": [{"ip": "x", "port": 53, "protocol": "UDP"}]})
    with pytest.raises(ApiError, match=r"^key: "):
        _call(kernel_dp, "dp.service.delete", {})


def test_kernel_datapath_says_it_has_no_load_balancer(kernel_dp):
    with pytest.raises(ApiError) as ei:
        _call(kernel_dp, "dp.service.upsert", {"frontend": _frontend()})
    assert ei.value.code == "unsupported"
    assert "kube-proxy" in ei.value.message and "kubeProxyReplacement: false" in ei.value.message
    assert _call(kernel_dp, "dp.service.list", {}) == []
    _call(kernel_dp, "dp.service.delete", {"key": "default/web:http/TCP"})
    _call(kernel_dp, "dp.service.backends", {"backends": [ServiceBackend("10.42.0.5", 53, protocol="UDP").to_dict()]})
    assert kernel_dp.backend.status()["services"] == {"loadBalancer": False, "frontends": 0, "compatBackends": 1}
