"""NovaNet core: hook specs, plugin manager, config, state model, agent, CNI protocol, local API, CLI.

Kept import-light on purpose: the CNI binary imports this package on every pod ADD.
"""

__version__ = "0.1.0"
