"""NovaNet VXLAN tunnel plugin."""

__version__ = "0.1.0"
