"""The core's ready-made backend plugin hooks (novanet_core.backend_hooks), as the plugin host
and a real API server and CLI use them."""

from __future__ import annotations

import types

import click
from click.testing import CliRunner

from novanet_core.api.router import ApiRouter
from novanet_core.backend_hooks import backend_hooks, novanetctl_command
from novanet_core.backends import BackendContext
from novanet_core.config.models import NovaNetConfig
from novanet_core.plugins.manager import PluginHost


class Pool:
    def __init__(self, ctx: BackendContext):
        self.ctx = ctx

    def status(self) -> dict[str, int]:
        return {"free": 7}


class OtherPool(Pool):
    pass


def errors(cfg: NovaNetConfig) -> list[str]:
    return ["pluginSettings.ar19.url: required"] if "ar19" in cfg.pluginSettings else []


def module(name: str, cls: type, kind: str = "ipam") -> types.ModuleType:
    mod = types.ModuleType(name)
    (mod.novanet_register_backends, mod.novanet_validate_config, mod.novanet_register_api) = backend_hooks(
        kind,
        "ar19",
        cls,
        description="ar19 pool",
        config_errors=errors,
        api={"ar19.pool": (cls.status, "ar19 pool usage")},
    )
    return mod


def test_the_hooks_register_check_and_add_methods_for_their_own_backend_only() -> None:
    mod = module("ar19_pool", Pool)
    host = PluginHost(
        NovaNetConfig(podCIDR="10.42.0.0/24", ipam={"type": "ar19"}),
        "agent",
        extra_plugins=[mod],
        load_entry_points=False,
    )
    assert host.records["ar19_pool"].hooks == [
        "novanet_register_api",
        "novanet_register_backends",
        "novanet_validate_config",
    ]
    assert host.registry.get("ipam", "ar19").description == "ar19 pool"
    assert mod.novanet_validate_config(config=NovaNetConfig(pluginSettings={"ar19": {}})) == [
        "pluginSettings.ar19.url: required"
    ]
    assert mod.novanet_validate_config(config=NovaNetConfig()) == []
    ours = Pool(BackendContext(config=host.config, component="agent"))
    for component, backends, want in (
        ("agent", {"ipam": ours}, True),
        ("dataplane", {"ipam": ours}, False),
        ("agent", {"ipam": object()}, False),
        ("agent", {}, False),
    ):
        router = ApiRouter()
        mod.novanet_register_api(router=router, component=component, backends=backends)
        assert ("ar19.pool" in router.methods()) is want, (component, backends)
        if want:
            handler, _, doc = router.get("ar19.pool")
            assert (handler({}), doc) == ({"free": 7}, "ar19 pool usage")


def test_a_datapath_s_methods_live_in_the_dataplane() -> None:
    mod = module("ar19_dp", OtherPool, kind="datapath")
    b = OtherPool(BackendContext(config=NovaNetConfig(), component="dataplane"))
    for component, want in (("dataplane", True), ("agent", False)):
        router = ApiRouter()
        mod.novanet_register_api(router=router, component=component, backends={"datapath": b})
        assert ("ar19.pool" in router.methods()) is want


def test_novanetctl_command_adds_its_command_to_novanetctl_only() -> None:
    hook = novanetctl_command(f"{__name__}:ar19_cmd")
    other, ctl = click.Group("novanet"), click.Group("novanetctl")
    hook(cli=other, program="novanet")
    hook(cli=ctl, program="novanetctl")
    assert other.commands == {}
    assert CliRunner().invoke(ctl, ["ar19"]).output == "ok\n"


@click.command("ar19")
def ar19_cmd() -> None:
    click.echo("ok")
