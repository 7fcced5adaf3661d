"""Command-line tools: ``novanetctl`` (node inspection) and ``novanet`` (the lab)."""
