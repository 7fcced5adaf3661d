"""NovaNet host-gw routing backend: an example of a third-party plugin (docs/plugin-authoring.md)."""

__version__ = "0.1.0"
