"""Entry point ``geneve`` (group ``novanet.plugins``): registers the ``geneve`` tunnel backend
(``tunnelProtocol: geneve``), its agent API method, its novanetctl command and its metrics."""

from __future__ import annotations

import weakref
from typing import Any

from novanet_core.backends import BackendContext, BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl
from novanet_geneve.backend import GeneveTunnel, config_errors

_active: weakref.ref[GeneveTunnel] | None = None


def active_backend() -> GeneveTunnel | None:
    return _active() if _active else None


def create_backend(ctx: BackendContext) -> GeneveTunnel:
    global _active
    b = GeneveTunnel(ctx)
    _active = weakref.ref(b)
    return b


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("tunnel", "geneve", create_backend,
                 description="Geneve (RFC 8926, UDP 6081) in tc eBPF with the source identity in an option")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str]:
    return config_errors(config)


@hookimpl
def novanet_register_api(router: Any, component: str) -> None:
    if component != "agent":
        return
    from novanet_core.api.protocol import ApiError

    def status(p: dict[str, Any]) -> dict[str, Any]:
        """Geneve programs, underlay, MTU and per-event packet counters."""
        b = active_backend()
        if b is None:
            raise ApiError("unavailable", "the geneve tunnel backend is not active in this agent")
        return b.api_status()

    router.add("geneve.status", status)


@hookimpl
def novanet_register_cli(cli: Any, program: str) -> None:
    if program != "novanetctl":
        return
    from novanet_geneve.cli import geneve_cmd

    cli.add_command(geneve_cmd)


@hookimpl
def novanet_register_metrics(registry: Any, component: str) -> None:
    if component != "agent":
        return
    from novanet_geneve.metrics import GeneveCollector

    registry.register(GeneveCollector(active_backend))
