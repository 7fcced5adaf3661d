"""What every BPF tunnel plugin shares: its programs' build, pins, slot, link and counters
(:mod:`.programs`), the shared ``tunnels`` map (:mod:`.entries`), routes over the underlay
(:mod:`.routes`) and a backend base class that puts them together (:mod:`.backend`)."""

from novanet_core.bpf.tunnel.backend import BpfTunnel
from novanet_core.bpf.tunnel.programs import TunnelPrograms

__all__ = ["BpfTunnel", "TunnelPrograms"]
