"""Kubernetes Services in the agent: per-node resolution (resolve.py) and datapath sync (sync.py)."""
