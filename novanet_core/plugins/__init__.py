"""Plugin discovery, registration and backend selection."""

from novanet_core.plugins.manager import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, PluginHost

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginHost"]
