"""CNI spec 1.1 protocol: the thin ``novanet-cni`` client and the agent-side handlers' shared rules."""
