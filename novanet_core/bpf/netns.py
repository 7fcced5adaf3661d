"""Network-namespace switching for BPF code: the core's one implementation (novanet_core.netns)."""

from novanet_core.netns import enter, in_netns, netns, netns_path

__all__ = ["enter", "in_netns", "netns", "netns_path"]
