"""The NovaNet agent (control plane): one per node."""
