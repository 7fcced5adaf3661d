"""The hook implementations a backend plugin writes alike, made once.

Most backend plugins register one backend class, check its part of the config and add agent API
methods answered by their own backend instance. Written by hand these hooks are the same dozen
lines in every plugin; here a plugin states only what differs::

    novanet_register_backends, novanet_validate_config, novanet_register_api = backend_hooks(
        "routing", "hostgw", HostGwRouting, description="...", config_errors=config_errors,
        api={"hostgw.routes": (HostGwRouting.status, "hostgw: routes wanted and installed")})

The names on the left are the hook names: the plugin host finds hook implementations by module
attribute name, so the unpacking is what registers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from novanet_core.backends import BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl

ApiMethods = Mapping[str, tuple[Callable[[Any], Any], str]]
"""API method name -> (answer from the plugin's backend instance, one-line doc)."""


class BackendHooks(NamedTuple):
    novanet_register_backends: Callable[..., None]
    novanet_validate_config: Callable[..., list[str]]
    novanet_register_api: Callable[..., None]


def component_of(kind: str) -> str:
    """The process a backend of this kind lives in."""
    return "dataplane" if kind == "datapath" else "agent"


def backend_hooks(
    kind: str,
    name: str,
    cls: type,
    *,
    description: str,
    config_errors: Callable[[NovaNetConfig], list[str]] | None = None,
    api: ApiMethods | None = None,
) -> BackendHooks:
    """``novanet_register_backends`` adding ``cls`` as backend ``kind``/``name``,
    ``novanet_validate_config`` returning ``config_errors(config)`` (none if not given), and
    ``novanet_register_api`` adding ``api``'s methods in the backend's process, only when the
    selected backend of ``kind`` is an instance of ``cls``."""
    methods = dict(api or {})
    where = component_of(kind)

    @hookimpl
    def novanet_register_backends(registry: BackendRegistry) -> None:
        registry.add(kind, name, cls, description=description)

    @hookimpl
    def novanet_validate_config(config: NovaNetConfig) -> list[str]:
        return config_errors(config) if config_errors else []

    @hookimpl
    def novanet_register_api(router: Any, component: str, backends: Mapping[str, Any]) -> None:
        b = backends.get(kind)
        if component != where or not isinstance(b, cls):
            return
        for method, (answer, doc) in methods.items():
            router.add(method, lambda params, answer=answer: answer(b), doc=doc)

    return BackendHooks(novanet_register_backends, novanet_validate_config, novanet_register_api)


def novanetctl_command(target: str) -> Callable[..., None]:
    """``novanet_register_cli`` adding one ``novanetctl`` command, ``"module:attribute"``; the
    module is imported only when ``novanetctl`` builds its commands, so the daemons never load the
    CLI's dependencies."""
    module, attr = target.split(":")

    @hookimpl
    def novanet_register_cli(cli: Any, program: str) -> None:
        if program != "novanetctl":
            return
        import importlib

        cli.add_command(getattr(importlib.import_module(module), attr))

    return novanet_register_cli
