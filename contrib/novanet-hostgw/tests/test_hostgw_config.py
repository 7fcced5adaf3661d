"""Selection by config and the config check, through the core's PluginHost (no root needed)."""

from __future__ import annotations

from typing import Any

import novanet_hostgw.plugin as plugin_module
import pytest
from novanet_hostgw.backend import HostGwRouting, config_errors

from novanet_core.api.router import ApiRouter
from novanet_core.backends import BackendContext, ConfigError, RoutingBackend
from novanet_core.config.models import NovaNetConfig
from novanet_core.plugins.manager import PluginHost
from novanet_core.types import NodeInfo

NATIVE = {"routingMode": "native", "routing": {"type": "hostgw"}}


def host(**cfg: Any) -> PluginHost:
    return PluginHost(NovaNetConfig(podCIDR="10.42.0.0/24", **cfg), "agent", extra_plugins=[plugin_module],
                      load_entry_points=False)


def test_routing_type_selects_the_backend_and_it_satisfies_the_protocol() -> None:
    h = host(**NATIVE)
    entry = h.select(["routing"])["routing"]
    assert (entry.name, entry.plugin) == ("hostgw", plugin_module.__name__)
    b = h.create("routing", BackendContext(config=h.config, component="agent"))
    assert isinstance(b, HostGwRouting) and isinstance(b, RoutingBackend)
    assert b.ip_families == (4,)


def test_without_the_plugin_the_selection_error_names_the_key() -> None:
    h = PluginHost(NovaNetConfig(podCIDR="10.42.0.0/24", **NATIVE), "agent", load_entry_points=False)
    with pytest.raises(ConfigError, match=r"routing\.type: no installed plugin provides routing backend 'hostgw'"):
        h.select(["routing"])


def test_config_errors_name_the_field() -> None:
    assert config_errors(NovaNetConfig(**NATIVE)) == []
    assert config_errors(NovaNetConfig(routingMode="native", routing={"type": "hostgw", "settings": {"asn": 1}})) == [
        "routing.settings.asn: unknown setting (hostgw takes none)"]
    (msg,) = config_errors(NovaNetConfig(tunnelProtocol="hostgw"))
    assert msg.startswith("tunnelProtocol: 'hostgw' is a routing backend") and "routingMode: native" in msg
    # another backend's settings are not ours to judge
    assert config_errors(NovaNetConfig(routingMode="native", routing={"type": "frr-bgp", "settings": {"asn": 1}})) == []


def test_a_bad_setting_stops_selection_and_creation() -> None:
    h = host(routingMode="native", routing={"type": "hostgw", "settings": {"peers": []}})
    with pytest.raises(ConfigError, match=r"routing\.settings\.peers: unknown setting"):
        h.select(["routing"])
    with pytest.raises(ConfigError, match=r"routing\.settings\.peers"):
        HostGwRouting(BackendContext(config=h.config, component="agent"))


def test_the_api_method_is_added_only_for_its_own_backend() -> None:
    cfg = NovaNetConfig(**NATIVE)
    b = HostGwRouting(BackendContext(config=cfg, component="agent"))
    for component, backends, want in (("agent", {"routing": b}, True), ("agent", {"routing": object()}, False),
                                      ("dataplane", {"routing": b}, False), ("agent", {}, False)):
        router = ApiRouter()
        plugin_module.novanet_register_api(router=router, component=component, backends=backends)
        assert ("hostgw.routes" in router.methods()) is want, (component, backends)


def test_start_without_an_underlay_names_the_key() -> None:
    cfg = NovaNetConfig(**NATIVE)
    b = HostGwRouting(BackendContext(config=cfg, component="agent", underlay_problem="underlayInterface: 'x' does not exist"))
    with pytest.raises(ConfigError, match="underlayInterface: 'x' does not exist"):
        b.start(NodeInfo("n1", "172.31.0.1", "10.42.0.0/24"))
    assert b.status()["connected"] is False
