"""Hook implementations: the module the ``novanet.plugins`` entry point ``host-local-ipam`` names."""

from __future__ import annotations

from novanet_core.backends import BackendContext, BackendRegistry
from novanet_core.hookspecs import hookimpl
from novanet_host_local_ipam.backend import DEFAULT_DATA_DIR, HostLocalIpam
from novanet_host_local_ipam.pool import Pool

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with

BACKEND_NAME = "host-local"


def create_backend(ctx: BackendContext) -> HostLocalIpam:
    """Factory the core calls when ``ipam.type`` is ``host-local``.

    Raises ``ConfigError`` naming ``podCIDR`` or ``ipam.dataDir`` when either is unusable.
    """
    data_dir = ctx.config.ipam.dataDir or DEFAULT_DATA_DIR
    return HostLocalIpam(Pool.from_context(ctx), data_dir)


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        "ipam",
        BACKEND_NAME,
        create_backend,
        description="node PodCIDR, one state file per IP under ipam.dataDir (reference CNI host-local layout)",
    )
