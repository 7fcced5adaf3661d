"""Hook implementations: the ``frr-bgp`` routing backend (``routingMode: native``), its config
checks, agent API methods and ``novanetctl routing`` commands."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from novanet_core.backends import BackendContext, BackendRegistry
from novanet_core.hookspecs import hookimpl
from novanet_frr_bgp.frrconf import redact
from novanet_frr_bgp.settings import parse_settings

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with

if TYPE_CHECKING:
    import click

    from novanet_core.api.router import ApiRouter
    from novanet_core.bundle import DebugBundle
    from novanet_core.config.models import NovaNetConfig
    from novanet_frr_bgp.backend import FrrBgpRouting

BACKEND = "frr-bgp"
# The agent owns the backend object; API handlers reach it here (one agent per process).
INSTANCE: FrrBgpRouting | None = None


def create(ctx: BackendContext) -> FrrBgpRouting:
    global INSTANCE
    from novanet_frr_bgp.backend import FrrBgpRouting

    INSTANCE = FrrBgpRouting(ctx)
    return INSTANCE


def _selected(config: NovaNetConfig) -> bool:
    return config.routingMode == "native" and config.routing.type == BACKEND


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("routing", BACKEND, create,
                 description="BGP through a running FRR (vtysh): full mesh or ToR peers, BFD, graceful restart")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str] | None:
    if not _selected(config):
        return None
    return parse_settings(config.routing.settings)[1]


@hookimpl
def novanet_register_api(router: ApiRouter, component: str) -> None:
    if component != "agent":
        return
    from novanet_frr_bgp import api

    api.register(router, lambda: INSTANCE)


@hookimpl
def novanet_register_cli(cli: click.Group, program: str) -> None:
    if program != "novanetctl":
        return
    from novanet_frr_bgp.cli import add_commands

    add_commands(cli)


@hookimpl
def novanet_debug_bundle(bundle: DebugBundle, config: NovaNetConfig) -> None:
    if not _selected(config):
        return
    s, _ = parse_settings(config.routing.settings)
    argv = ["vtysh"]
    if s is not None:
        argv = [s.vtysh] + (["-N", s.pathspace] if s.pathspace else []) + (["--vty_socket", s.vtySocket] if s.vtySocket else [])
    for name, cmd in (("frr-bgp-summary.txt", "show bgp summary"), ("frr-bgp-neighbors.json", "show bgp neighbors json"),
                      ("frr-bfd-peers.txt", "show bfd peers"), ("frr-ip-route.txt", "show ip route")):
        bundle.add_command(name, [*argv, "-c", cmd])
    # The running config holds BGP passwords: collected here so that they can be redacted.
    try:
        r = subprocess.run([*argv, "-c", "show running-config"], capture_output=True, text=True, timeout=10)
        text = "\n".join(redact(r.stdout.splitlines())) + "\n"
    except (OSError, subprocess.TimeoutExpired) as e:
        text = f"failed: {e}\n"
    bundle.add_text("frr-running-config.txt", text)




@hookimpl
def novanet_register_metrics(registry: Any, component: str) -> None:
    if component != "agent":
        return
    from novanet_frr_bgp.metrics import BgpCollector

    registry.register(BgpCollector(lambda: INSTANCE))
