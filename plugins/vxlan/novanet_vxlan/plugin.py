"""Entry point ``vxlan`` (group ``novanet.plugins``): registers the ``vxlan`` tunnel backend
(``tunnelProtocol: vxlan``), its agent API method and its config check."""

from __future__ import annotations

from novanet_vxlan.backend import VxlanTunnel, config_errors

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with

novanet_register_backends, novanet_validate_config, novanet_register_api = VxlanTunnel.plugin_hooks(
    description="shared collect-metadata VXLAN device nvx0 (UDP 4789, learning off)",
    config_errors=config_errors,
)
