"""Entry point ``vxlan`` (group ``novanet.plugins``): registers the ``vxlan`` tunnel backend
(``tunnelProtocol: vxlan``), its agent API method and its config check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novanet_core.backends import BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl
from novanet_vxlan.backend import VxlanTunnel, config_errors

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("tunnel", "vxlan", VxlanTunnel,
                 description="shared collect-metadata VXLAN device nvx0 (UDP 4789, learning off)")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str]:
    return config_errors(config)


@hookimpl
def novanet_register_api(router: Any, component: str, backends: Mapping[str, Any]) -> None:
    VxlanTunnel.register_api(router, component, backends)  # vxlan.status
