"""Pod egress masquerade (``egress.masqueradeEnabled``): SNAT to the node for traffic leaving the
cluster CIDR.

One nftables table of NovaNet's own (``ip novanet``), replaced atomically with ``nft -f`` so the
rule set is always either the old or the new one; disabling the key removes the table. Unlike the
original, which installed its iptables rule regardless of the setting, the key is honoured.
"""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)

TABLE = "novanet"


def ruleset(pod_cidr: str, cluster_cidr: str) -> str:
    return (
        f"table ip {TABLE} {{}}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {pod_cidr} ip daddr != {cluster_cidr} masquerade comment \"novanet masquerade\"\n"
        "  }\n"
        "}\n"
    )


def apply(enabled: bool, pod_cidr: str, cluster_cidr: str) -> None:
    if enabled:
        text = ruleset(pod_cidr, cluster_cidr)
    else:
        text = f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
    try:
        p = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        log.error("egress.masqueradeEnabled: nft (nftables) is not installed; pod egress is not masqueraded")
        return
    if p.returncode != 0:
        log.error("egress.masqueradeEnabled: nft failed: %s", p.stderr.strip())
    else:
        log.info("egress masquerade %s (%s -> outside %s)", "on" if enabled else "off", pod_cidr, cluster_cidr)

