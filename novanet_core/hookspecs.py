"""The hook specifications every NovaNet plugin implements a subset of.

Plugins meet the core (and never each other) through these hooks and the types in
``novanet_core.types`` / ``novanet_core.backends``. The kind of each hook is a decision:

* **historic** hooks announce registries that exist for the whole process; a plugin registered
  late (for instance from a test) still gets the call.
* **firstresult** hooks ask "who answers this?": the first non-``None`` result wins.
* the rest **fan out**: every active plugin is called and results (if any) are collected.

Every hook here is documented in ``docs/plugin-hooks.md`` with its exact signature and has a
``test_hook_<name>`` test; ``tests/unit/test_hookspecs.py`` enforces both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from novanet_core.api.router import ApiRouter
    from novanet_core.backends import BackendRegistry
    from novanet_core.bundle import DebugBundle
    from novanet_core.config.models import NovaNetConfig
    from novanet_core.types import Endpoint, NodeInfo

PROJECT = "novanet"
# The version of what plugins build on: these hooks, the protocols and BackendContext in
# novanet_core.backends, the types in novanet_core.types, and the rest of the public surface
# listed in docs/plugin-authoring.md. Minor: additions only; major: something a plugin may rely
# on changed. A plugin states what it supports in a module attribute of its entry point module,
# ``NOVANET_PLUGIN_API = ">=1.0,<2"`` (a version specifier); one that does not is taken to
# support DEFAULT_PLUGIN_API.
PLUGIN_API_VERSION = "1.0"
DEFAULT_PLUGIN_API = ">=1.0,<2"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- registration


@hookspec(historic=True)
def novanet_register_backends(registry: BackendRegistry) -> None:
    """Register the backends this plugin provides.

    Call ``registry.add(kind, name, factory, description=...)`` once per backend, where ``kind`` is
    one of ``ipam``, ``datapath``, ``tunnel``, ``routing`` or ``state-source`` and ``name`` is the
    value a user writes in the config key that selects it (``ipam.type``, ``datapath``,
    ``tunnelProtocol``, ``routing.type``, ``stateSource.type``). ``factory(ctx)`` is called only when
    the backend is selected, with a :class:`novanet_core.backends.BackendContext`, and returns an
    object implementing the matching protocol in :mod:`novanet_core.backends`.

    Historic, so that a plugin registered after start-up (tests, ``NOVANET_PLUGINS``) still registers.
    """


@hookspec(historic=True)
def novanet_register_cli(cli: click.Group, program: str) -> None:
    """Add click subcommands for this plugin's backend.

    ``program`` is ``"novanetctl"`` (node inspection: talks to the local API) or ``"novanet"``
    (the user-facing tool). A plugin owns its CLI: e.g. the frr-bgp plugin adds ``novanetctl
    routing``, the lab plugin ``novanet lab``. Add commands only for your own backend; guard on
    the program name. The ``novanetctl`` group also takes ``cli.add_node_resolver(name, fn)``:
    ``fn(node, lab)`` returns the agent socket of a node named by ``--node`` (or None), which is
    how the lab plugin makes ``novanetctl --node node-1 --lab NAME`` work.
    """


@hookspec(historic=True)
def novanet_register_metrics(registry: CollectorRegistry, component: str, backends: Mapping[str, Any]) -> None:
    """Register Prometheus collectors on ``registry``.

    ``component`` is ``"agent"`` or ``"dataplane"``: each process serves its own registry, and a
    plugin registers only what it updates in that process. ``backends`` maps each backend kind
    created in this process to its instance (``{"datapath": ...}`` in the dataplane; ``ipam``,
    ``state-source`` and ``tunnel`` or ``routing`` in the agent): a plugin reads its own
    backend from it (``isinstance`` on its own class) instead of keeping a global.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def novanet_validate_config(config: NovaNetConfig) -> list[str] | None:
    """Check plugin-specific config before anything starts.

    Return a list of error messages, each starting with the config key it is about
    (``"routing.asn: must be 1..4294967295"``), or ``None``/``[]`` when the config is fine. All
    active plugins are asked (fan-out) and every message is reported together at start-up.
    """


@hookspec
def novanet_register_api(router: ApiRouter, component: str, backends: Mapping[str, Any]) -> None:
    """Add methods to a process's local JSON API (``router.add(name, handler)``).

    ``component`` is ``"agent"`` (the ``novanetctl`` socket) or ``"dataplane"`` (the agent-facing
    dataplane socket). Method names are namespaced by the plugin (``routing.peers``). Only
    plugins whose backend is active in that process are called. ``backends`` maps each backend
    kind created in this process to its instance, as for ``novanet_register_metrics``.
    """


@hookspec(firstresult=True)
def novanet_node_ip(config: NovaNetConfig) -> str | None:
    """Return this node's IP when ``nodeIP``/``NOVANET_NODE_IP`` is not set, or ``None``.

    First answer wins. The core's fallback (``trylast``) picks the source address of the
    default route, then the first global IPv4 address.
    """


# --------------------------------------------------------------------------- observability / events


@hookspec
def novanet_endpoint_added(endpoint: Endpoint) -> None:
    """A pod endpoint on this node was created (after the datapath has it). Fan-out, agent only."""


@hookspec
def novanet_endpoint_removed(endpoint: Endpoint) -> None:
    """A pod endpoint on this node was removed (after the datapath dropped it). Fan-out, agent only."""


@hookspec
def novanet_nodes_changed(local: NodeInfo, remotes: list[NodeInfo]) -> None:
    """The set of nodes changed (added, removed, IP or PodCIDR changed). Fan-out, agent only.

    Called with the full current view, not a delta, so that an implementation can be
    idempotent and restart-safe.
    """


@hookspec
def novanet_debug_bundle(bundle: DebugBundle, config: NovaNetConfig) -> None:
    """Add this plugin's diagnostics to a debug bundle (``bundle.add_text(name, text)``,
    ``bundle.add_command(name, argv)``). Fan-out."""


def all_hook_names() -> list[str]:
    """The names of every hook spec in this module (used by the docs and tests)."""
    return sorted(n for n, v in globals().items() if n.startswith("novanet_") and callable(v))


def hook_signature(name: str) -> str:
    import inspect

    fn: Any = globals()[name]
    # Annotations are strings (postponed evaluation); show them as written in the source.
    return f"{name}{inspect.signature(fn)}".replace("'", "")
