"""Entry point ``vxlan`` (group ``novanet.plugins``): registers the ``vxlan`` tunnel backend
(``tunnelProtocol: vxlan``), its agent API method and its config check."""

from __future__ import annotations

import weakref
from typing import Any

from novanet_core.backends import BackendContext, BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl
from novanet_vxlan.backend import VxlanTunnel, config_errors

_active: weakref.ref[VxlanTunnel] | None = None


def create_backend(ctx: BackendContext) -> VxlanTunnel:
    global _active
    b = VxlanTunnel(ctx)
    _active = weakref.ref(b)
    return b


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("tunnel", "vxlan", create_backend,
                 description="shared collect-metadata VXLAN device nvx0 (UDP 4789, learning off)")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str]:
    return config_errors(config)


@hookimpl
def novanet_register_api(router: Any, component: str) -> None:
    if component != "agent":
        return
    from novanet_core.api.protocol import ApiError

    def status(p: dict[str, Any]) -> dict[str, Any]:
        """nvx0, BPF mode, the programs and their per-event packet counters."""
        b = _active() if _active else None
        if b is None:
            raise ApiError("unavailable", "the vxlan tunnel backend is not active in this agent")
        return b.api_status()

    router.add("vxlan.status", status)
