"""``novanet-dataplane``: the per-node process that owns the datapath (BPF programs and maps)."""
