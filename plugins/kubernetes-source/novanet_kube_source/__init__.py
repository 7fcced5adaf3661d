"""NovaNet state source for a real cluster: the Kubernetes API."""

__version__ = "0.1.0"
