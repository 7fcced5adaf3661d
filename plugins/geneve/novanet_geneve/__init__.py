"""NovaNet Geneve tunnel plugin: encapsulation and decapsulation in tc eBPF (no geneve device)."""

__version__ = "0.1.0"
