"""Behaviour of each hook as seen by a plugin (the process-level hooks; agent event hooks are in
tests/integration/test_hooks_agent.py)."""

from __future__ import annotations

import os
import socket
import tarfile
import types

import click
import pytest
from click.testing import CliRunner
from prometheus_client import Gauge

from novanet_core.api.client import ApiClient
from novanet_core.api.router import ApiRouter
from novanet_core.api.server import ApiServer
from novanet_core.backends import BackendContext, ConfigError
from novanet_core.bundle import DebugBundle
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl
from novanet_core.metrics import start_metrics
from novanet_core.plugins.manager import PluginHost
from novanet_core.types import IpamAllocation


def plugin(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for k, v in hooks.items():
        setattr(mod, k, hookimpl(v) if not hasattr(v, "novanet_impl") else v)
    return mod


def host_with(*plugins, **cfg) -> PluginHost:
    return PluginHost(NovaNetConfig(podCIDR="10.42.0.0/24", **cfg), "agent", extra_plugins=plugins,
                      load_entry_points=False)


class FakeIpam:  # a real object implementing the protocol, as a third-party backend would
    def __init__(self, ctx):
        self.ctx = ctx

    def allocate(self, request):
        return IpamAllocation(request.container_id, request.ifname, "10.42.0.2", 24, "10.42.0.1")

    def release(self, container_id, ifname):
        return []

    def get(self, container_id, ifname):
        return None

    def list(self):
        return []

    def gc(self, valid):
        return []

    def status(self):
        return {"ready": True, "capacity": 0, "allocated": 0}


def test_hook_novanet_register_backends_selects_by_config_and_reports_conflicts():
    p = plugin("acme_ipam", novanet_register_backends=lambda registry: registry.add("ipam", "acme", FakeIpam))
    host = host_with(p, ipam={"type": "acme"})
    entry = host.select(["ipam"])["ipam"]
    assert entry.plugin == "acme_ipam"
    backend = host.create("ipam", BackendContext(config=host.config, component="agent"))
    assert isinstance(backend, FakeIpam)
    assert next(r for r in host.info() if r["name"] == "acme_ipam")["active"] is True

    clash = plugin("other_ipam", novanet_register_backends=lambda registry: registry.add("ipam", "acme", FakeIpam))
    host2 = host_with(p, clash, ipam={"type": "acme"})
    with pytest.raises(ConfigError, match="ipam.type='acme' is provided by both plugin 'acme_ipam' and plugin 'other_ipam'"):
        host2.select(["ipam"])


def test_unknown_backend_names_the_key_and_lists_installed_plugins():
    host = host_with(ipam={"type": "nope"})
    with pytest.raises(ConfigError) as e:
        host.select(["ipam", "datapath"])
    msg = str(e.value)
    assert "ipam.type: no installed plugin provides ipam backend 'nope'" in msg
    assert "installed plugins: " in msg and "kernel_datapath" in msg
    assert "datapath: no installed plugin provides datapath backend 'ebpf'" not in msg or "available:" in msg


def test_blocked_plugins_do_not_load(monkeypatch):
    monkeypatch.setenv("NOVANET_DISABLED_PLUGINS", "kernel_datapath")
    host = host_with(datapath="kernel")
    assert "kernel_datapath" not in {r["name"] for r in host.info()}
    with pytest.raises(ConfigError, match="datapath: no installed plugin provides datapath backend 'kernel'"):
        host.select(["datapath"])


def test_hook_novanet_register_cli_adds_a_command():
    def register(cli, program):
        if program == "novanetctl":
            @cli.command("acme-hello")
            def hello():
                click.echo("hello from acme")

    host = host_with(plugin("acme_cli", novanet_register_cli=register))
    group = click.Group("novanetctl")
    host.pm.hook.novanet_register_cli.call_historic(kwargs={"cli": group, "program": "novanetctl"})
    res = CliRunner().invoke(group, ["acme-hello"])
    assert res.exit_code == 0 and res.output == "hello from acme\n"
    other = click.Group("novanet")
    host.pm.hook.novanet_register_cli.call_historic(kwargs={"cli": other, "program": "novanet"})
    assert "acme-hello" not in other.commands


def test_hook_novanet_register_metrics_gets_a_registry_per_component():
    seen = []

    def register(registry, component):
        seen.append(component)
        g = Gauge("acme_widgets", "widgets", registry=registry)
        g.set(7)

    host = host_with(plugin("acme_metrics", novanet_register_metrics=register))
    reg = start_metrics("", host, "dataplane")
    assert seen == ["dataplane"]
    assert reg.get_sample_value("acme_widgets") == 7


def test_hook_novanet_register_metrics_gets_the_backends_of_the_process():
    mine = FakeIpam(None)
    got = []

    def register(registry, component, backends):  # the newer, longer signature
        got.append(backends.get("ipam"))

    host = host_with(plugin("acme_metrics2", novanet_register_metrics=register))
    start_metrics("", host, "agent", backends={"ipam": mine})
    assert got == [mine]


def test_hook_novanet_validate_config_errors_are_reported_together():
    def validate(config):
        return ["pluginSettings.acme.speed: must be positive"] if config.pluginSettings.get("acme", {}).get("speed", 1) <= 0 else []

    host = host_with(plugin("acme_cfg", novanet_validate_config=validate), pluginSettings={"acme": {"speed": -1}},
                     ipam={"type": "missing"})
    with pytest.raises(ConfigError) as e:
        host.select(["ipam"])
    assert "pluginSettings.acme.speed: must be positive" in str(e.value)
    assert "ipam.type" in str(e.value)
    ok = host_with(plugin("acme_cfg", novanet_validate_config=validate), datapath="kernel")
    ok.select(["datapath"])


def test_hook_novanet_register_api_methods_are_served(tmp_path):
    def register(router, component):
        if component == "agent":
            router.add("acme.ping", lambda params: {"pong": params.get("n", 0) + 1})

    def register_with_backend(router, component, backends):
        b = backends.get("ipam")
        if isinstance(b, FakeIpam):
            router.add("acme.pool", lambda params: b.status())

    host = host_with(plugin("acme_api", novanet_register_api=register),
                     plugin("acme_api2", novanet_register_api=register_with_backend))
    router = ApiRouter()
    host.pm.hook.novanet_register_api(router=router, component="agent", backends={"ipam": FakeIpam(None)})
    srv = ApiServer(str(tmp_path / "api.sock"), router)
    srv.start()
    try:
        with ApiClient(str(tmp_path / "api.sock")) as c:
            assert c.call("acme.ping", {"n": 41}) == {"pong": 42}
            assert c.call("acme.pool")["ready"] is True
        dp_router = ApiRouter()
        host.pm.hook.novanet_register_api(router=dp_router, component="dataplane", backends={})
        assert "acme.ping" not in dp_router.methods()
    finally:
        srv.stop()


def test_hook_novanet_node_ip_first_answer_wins_over_the_builtin_fallback():
    host = host_with(plugin("acme_ip", novanet_node_ip=lambda config: "192.0.2.55"))
    assert host.pm.hook.novanet_node_ip(config=host.config) == "192.0.2.55"
    # Without it the built-in (trylast) answers from this machine's routes/addresses.
    fallback = host_with().pm.hook.novanet_node_ip(config=host.config)
    assert fallback is None or socket.inet_aton(fallback)


def test_hook_novanet_debug_bundle_collects_plugin_files(tmp_path):
    def contribute(bundle, config):
        bundle.add_text("acme/state.txt", f"cluster {config.clusterCIDR}\n")
        bundle.add_command("acme/echo.txt", ["echo", "hi"])

    host = host_with(plugin("acme_dbg", novanet_debug_bundle=contribute))
    b = DebugBundle()
    host.pm.hook.novanet_debug_bundle(bundle=b, config=host.config)
    out = tmp_path / "b.tar.gz"
    b.write_tar(str(out))
    with tarfile.open(out) as t:
        names = t.getnames()
        assert "novanet-debug/acme/state.txt" in names
        assert t.extractfile("novanet-debug/acme/state.txt").read() == b"cluster 10.42.0.0/16\n"
        assert b"hi" in t.extractfile("novanet-debug/acme/echo.txt").read()
    assert os.path.getsize(out) > 0


def test_plugin_api_version_refuses_a_plugin_that_needs_another_api():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from novanet_core.hookspecs import DEFAULT_PLUGIN_API, PLUGIN_API_VERSION
    from novanet_core.plugins.manager import api_mismatch

    def ipam_plugin(name, spec=None):
        p = plugin(name, novanet_register_backends=lambda registry: registry.add("ipam", "acme", FakeIpam))
        if spec is not None:
            p.NOVANET_PLUGIN_API = spec
        return p

    assert api_mismatch(ipam_plugin("undeclared"), "undeclared") is None  # taken to support DEFAULT_PLUGIN_API
    assert Version(PLUGIN_API_VERSION) in SpecifierSet(DEFAULT_PLUGIN_API)
    assert api_mismatch(ipam_plugin("bad", "one or two"), "bad") == (
        "plugin 'bad': NOVANET_PLUGIN_API 'one or two' is not a version specifier (e.g. '>=1.0,<2')")
    host = host_with(ipam_plugin("acme_new", ">=2"), ipam={"type": "acme"}, datapath="kernel")
    rec = next(r for r in host.info() if r["name"] == "acme_new")
    assert rec["error"] == (f"plugin 'acme_new' supports NovaNet plugin API >=2, but this NovaNet provides plugin "
                            f"API {PLUGIN_API_VERSION}: not loaded")
    with pytest.raises(ConfigError) as e:
        host.select(["ipam"])
    assert "ipam.type: no installed plugin provides ipam backend 'acme'" in str(e.value)
    assert f"plugin 'acme_new' not loaded: {rec['error']}" in str(e.value)
    # the node still runs on what fits: the built-in datapath is there and selectable
    host.select(["datapath"])
    fits = host_with(ipam_plugin("acme_ok", f"=={PLUGIN_API_VERSION}"), ipam={"type": "acme"})
    assert fits.select(["ipam"])["ipam"].plugin == "acme_ok"
