"""The core's own plugins. Registered exactly like third-party plugins (see plugins.manager.DEFAULT_PLUGINS)."""
