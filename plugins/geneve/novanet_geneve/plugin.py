"""Entry point ``geneve`` (group ``novanet.plugins``): registers the ``geneve`` tunnel backend
(``tunnelProtocol: geneve``), its agent API method, its novanetctl command and its metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novanet_core.backend_hooks import novanetctl_command
from novanet_core.hookspecs import hookimpl
from novanet_geneve.backend import GeneveTunnel, config_errors

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with

novanet_register_backends, novanet_validate_config, novanet_register_api = GeneveTunnel.plugin_hooks(
    description="Geneve (RFC 8926, UDP 6081) in tc eBPF with the source identity in an option",
    config_errors=config_errors,
)
novanet_register_cli = novanetctl_command("novanet_geneve.cli:geneve_cmd")


@hookimpl
def novanet_register_metrics(registry: Any, component: str, backends: Mapping[str, Any]) -> None:
    b = backends.get("tunnel")
    if component != "agent" or not isinstance(b, GeneveTunnel):
        return
    from novanet_geneve.metrics import GeneveCollector

    registry.register(GeneveCollector(lambda: b))
