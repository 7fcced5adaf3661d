"""Entry point ``hostgw`` (group ``novanet.plugins``): the ``hostgw`` routing backend
(``routingMode: native``, ``routing.type: hostgw``), its config check and its agent API method
``hostgw.routes``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novanet_core.api.router import ApiRouter
from novanet_core.backends import BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl
from novanet_hostgw.backend import NAME, HostGwRouting, config_errors

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("routing", NAME, HostGwRouting,
                 description="remote PodCIDRs via their nodes' underlay addresses (one L2 segment, no encapsulation)")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str]:
    return config_errors(config)


@hookimpl
def novanet_register_api(router: ApiRouter, component: str, backends: Mapping[str, Any]) -> None:
    b = backends.get("routing")
    if component == "agent" and isinstance(b, HostGwRouting):
        router.add(f"{NAME}.routes", lambda params: b.status(), doc=f"{NAME}: routes wanted and installed, unreachable nodes")
