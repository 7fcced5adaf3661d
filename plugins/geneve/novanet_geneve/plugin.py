"""Entry point ``geneve`` (group ``novanet.plugins``): registers the ``geneve`` tunnel backend
(``tunnelProtocol: geneve``), its agent API method, its novanetctl command and its metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novanet_core.backends import BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl
from novanet_geneve.backend import GeneveTunnel, config_errors

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("tunnel", "geneve", GeneveTunnel,
                 description="Geneve (RFC 8926, UDP 6081) in tc eBPF with the source identity in an option")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str]:
    return config_errors(config)


@hookimpl
def novanet_register_api(router: Any, component: str, backends: Mapping[str, Any]) -> None:
    GeneveTunnel.register_api(router, component, backends)  # geneve.status


@hookimpl
def novanet_register_cli(cli: Any, program: str) -> None:
    if program != "novanetctl":
        return
    from novanet_geneve.cli import geneve_cmd

    cli.add_command(geneve_cmd)


@hookimpl
def novanet_register_metrics(registry: Any, component: str, backends: Mapping[str, Any]) -> None:
    b = backends.get("tunnel")
    if component != "agent" or not isinstance(b, GeneveTunnel):
        return
    from novanet_geneve.metrics import GeneveCollector

    registry.register(GeneveCollector(lambda: b))
