"""Entry point ``hostgw`` (group ``novanet.plugins``): the ``hostgw`` routing backend
(``routingMode: native``, ``routing.type: hostgw``), its config check and its agent API method
``hostgw.routes``."""

from __future__ import annotations

from novanet_core.backend_hooks import backend_hooks
from novanet_hostgw.backend import NAME, HostGwRouting, config_errors

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with

# The hook names on the left are what registers them (the plugin host looks hooks up by name).
novanet_register_backends, novanet_validate_config, novanet_register_api = backend_hooks(
    "routing",
    NAME,
    HostGwRouting,
    config_errors=config_errors,
    description="remote PodCIDRs via their nodes' underlay addresses (one L2 segment, no encapsulation)",
    api={f"{NAME}.routes": (HostGwRouting.status, f"{NAME}: routes wanted and installed, unreachable nodes")},
)
