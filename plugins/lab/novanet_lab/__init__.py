"""NovaNet lab: a whole NovaNet cluster on one Linux machine (``novanet lab ...``); nodes and pods are
network namespaces."""

__version__ = "0.1.0"
