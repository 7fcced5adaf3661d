"""NovaNet's eBPF datapath plugin (datapath backend ``ebpf``)."""

__version__ = "0.1.0"
