"""The plugin host: one pluggy PluginManager per process, plus config-driven backend selection.

Built-in plugins are registered exactly like third-party ones (the pytest ``default_plugins`` /
datasette ``DEFAULT_PLUGINS`` pattern): the core's own modules listed in :data:`DEFAULT_PLUGINS`
and every installed distribution's ``novanet.plugins`` entry points go through the same
``register`` call, the same ``novanet_register_backends`` hook and the same selection. The core
never imports a plugin package by name.

Environment:
  ``NOVANET_DISABLED_PLUGINS``  comma-separated plugin names never to load (``set_blocked``)
  ``NOVANET_PLUGINS``           comma-separated extra plugin modules to import and register
  ``NOVANET_TRACE_HOOKS=1``     log every hook call and result at debug level
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from novanet_core import hookspecs
from novanet_core.backends import (
    SELECTOR_KEYS,
    BackendContext,
    BackendEntry,
    BackendRegistry,
    ConfigError,
    backend_problems,
)
from novanet_core.config.models import NovaNetConfig

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "novanet.plugins"

# The core's own plugins: backends that need nothing beyond the core's dependencies.
DEFAULT_PLUGINS = (
    "novanet_core.builtin.manifest_source",
    "novanet_core.builtin.kernel_datapath",
    "novanet_core.builtin.node_ip",
)


@dataclass
class PluginRecord:
    name: str
    module: str
    version: str
    distribution: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    active: bool = False


def required_kinds(config: NovaNetConfig, component: str) -> list[str]:
    """Which backend kinds a process needs under this config."""
    if component == "dataplane":
        return ["datapath"]
    kinds = ["ipam", "state-source", "datapath"]
    kinds.append("tunnel" if config.routingMode == "overlay" else "routing")
    return kinds


def selected_name(config: NovaNetConfig, kind: str) -> str:
    return {
        "ipam": config.ipam.type,
        "datapath": config.datapath,
        "tunnel": config.tunnelProtocol,
        "routing": config.routing.type,
        "state-source": config.stateSource.type,
    }[kind]


class PluginHost:
    def __init__(
        self,
        config: NovaNetConfig,
        component: str,
        extra_plugins: Iterable[Any] = (),
        load_entry_points: bool = True,
    ):
        self.config = config
        self.component = component
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.broken: dict[str, str] = {}  # plugin -> why it is not loaded (import error, API version)
        disabled = set(config.plugins.disabled)
        disabled |= {p.strip() for p in os.environ.get("NOVANET_DISABLED_PLUGINS", "").split(",") if p.strip()}
        for name in disabled:
            self.pm.set_blocked(name)
        for modname in DEFAULT_PLUGINS:
            self._register_module(importlib.import_module(modname), modname.rsplit(".", 1)[-1], builtin=True)
        if load_entry_points:
            self._load_entry_points(disabled)
        for modname in filter(None, (m.strip() for m in os.environ.get("NOVANET_PLUGINS", "").split(","))):
            self._register_module(importlib.import_module(modname), modname, builtin=False)
        for obj in extra_plugins:
            self._register_module(obj, getattr(obj, "__name__", repr(obj)), builtin=False)
        self.pm.check_pending()
        if os.environ.get("NOVANET_TRACE_HOOKS") == "1":
            self.pm.add_hookcall_monitoring(
                lambda name, impls, kw: log.debug("hook %s -> %s", name, [i.plugin_name for i in impls]),
                lambda outcome, name, impls, kw: log.debug("hook %s returned %r", name, outcome.get_result()),
            )
        self.registry = BackendRegistry()
        self._collect_backends()
        self.selected: dict[str, BackendEntry] = {}

    # ---------------------------------------------------------------- discovery
    def _register_module(self, module: Any, name: str, builtin: bool, dist: str = "novanet", version: str = "") -> None:
        if self.pm.is_blocked(name):
            return
        refused = None if builtin else api_mismatch(module, name)
        if refused:
            # Like a plugin that fails to import: reported, and fatal only if its backend is selected.
            log.error("%s", refused)
            self.broken[name] = refused
            return
        if not version:
            try:
                version = md.version(dist)
            except md.PackageNotFoundError:
                version = "unknown"
        self.pm.register(module, name=name)
        self.records[name] = PluginRecord(
            name=name,
            module=getattr(module, "__name__", name),
            version=version,
            distribution=dist if not builtin else "novanet",
            builtin=builtin,
            hooks=sorted(h.name for h in (self.pm.get_hookcallers(module) or [])),
        )

    def _load_entry_points(self, disabled: set[str]) -> None:
        allow = set(self.config.plugins.load)
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or (allow and ep.name not in allow) or self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as e:
                # A broken plugin that is not selected must not take the node down; if it is the
                # one selected, select() reports this error next to "no plugin provides ...".
                log.error("plugin %r (%s) failed to import: %s", ep.name, ep.value, e)
                self.broken[ep.name] = f"{type(e).__name__}: {e}"
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "unknown"
            self._register_module(module, ep.name, builtin=False, dist=dist, version=version)

    def _collect_backends(self) -> None:
        # Call each plugin separately so the registry knows who registered what (conflicts
        # name both plugins). Historic: plugins registered later still get called.
        for name, plugin in self.pm.list_name_plugin():
            if not hasattr(plugin, "novanet_register_backends"):
                continue
            self.registry.current_plugin = name
            plugin.novanet_register_backends(registry=self.registry)
            self.records[name].backends = [f"{e.kind}:{e.name}" for e in self.registry.entries() if e.plugin == name]

    # ---------------------------------------------------------------- selection
    def select(self, kinds: Iterable[str] | None = None) -> dict[str, BackendEntry]:
        """Pick the backend of every needed kind from config; one ConfigError lists all problems."""
        kinds = list(kinds) if kinds is not None else required_kinds(self.config, self.component)
        problems = list(self.registry.conflicts)
        for kind in kinds:
            want = selected_name(self.config, kind)
            entry = self.registry.get(kind, want)
            if entry is None:
                have = self.registry.names(kind)
                installed = ", ".join(f"{r.name} {r.version}" for r in self.records.values()) or "none"
                broken = "".join(f"; plugin {n!r} not loaded: {err}" for n, err in self.broken.items())
                problems.append(
                    f"{SELECTOR_KEYS[kind]}: no installed plugin provides {kind} backend {want!r} "
                    f"(available: {', '.join(have) or 'none'}; installed plugins: {installed}{broken})"
                )
            else:
                self.selected[kind] = entry
        errors = [m for res in self.pm.hook.novanet_validate_config(config=self.config) for m in (res or [])]
        problems += errors
        if problems:
            raise ConfigError("; ".join(problems))
        providers = {e.plugin for e in self.selected.values()}
        for rec in self.records.values():
            rec.active = rec.name in providers or not rec.backends
        return self.selected

    def create(self, kind: str, ctx: BackendContext | None = None) -> Any:
        """Build the selected backend of ``kind``; a ConfigError names what it lacks of its protocol."""
        entry = self.selected.get(kind) or self.select([kind])[kind]
        backend = entry.factory(ctx or BackendContext(config=self.config, component=self.component))
        problems = backend_problems(kind, backend)
        if problems:
            raise ConfigError(f"{SELECTOR_KEYS[kind]}: {kind} backend {entry.name!r} of plugin {entry.plugin!r} "
                              f"({type(backend).__name__}) does not implement its protocol: {'; '.join(problems)}")
        return backend

    @property
    def hook(self) -> Any:
        """Hook caller restricted to active plugins (inactive backends' plugins stay silent)."""
        inactive = [self.pm.get_plugin(r.name) for r in self.records.values() if not r.active]
        inactive = [p for p in inactive if p is not None]
        if not inactive:
            return self.pm.hook
        return _SubsetHooks(self.pm, inactive)

    def info(self) -> list[dict[str, Any]]:
        out = [r.__dict__.copy() for r in sorted(self.records.values(), key=lambda r: r.name)]
        for name, err in sorted(self.broken.items()):
            out.append({"name": name, "module": "", "version": "", "distribution": "", "builtin": False,
                        "hooks": [], "backends": [], "active": False, "error": err})
        return out


def api_mismatch(module: Any, name: str) -> str | None:
    """Why a plugin module cannot be loaded by this plugin API version (None when it can)."""
    spec = getattr(module, "NOVANET_PLUGIN_API", hookspecs.DEFAULT_PLUGIN_API)
    try:
        ok = Version(hookspecs.PLUGIN_API_VERSION) in SpecifierSet(str(spec))
    except InvalidSpecifier:
        return (f"plugin {name!r}: NOVANET_PLUGIN_API {spec!r} is not a version specifier "
                f"(e.g. '{hookspecs.DEFAULT_PLUGIN_API}')")
    if ok:
        return None
    return (f"plugin {name!r} supports NovaNet plugin API {spec}, but this NovaNet provides plugin API "
            f"{hookspecs.PLUGIN_API_VERSION}: not loaded")


class _SubsetHooks:
    def __init__(self, pm: pluggy.PluginManager, remove: list[Any]):
        self._pm, self._remove = pm, remove

    def __getattr__(self, name: str) -> Any:
        return self._pm.subset_hook_caller(name, remove_plugins=self._remove)
