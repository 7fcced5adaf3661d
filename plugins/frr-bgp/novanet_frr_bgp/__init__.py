"""NovaNet native routing through FRR: BGP full mesh / ToR peers, BFD, graceful restart."""
