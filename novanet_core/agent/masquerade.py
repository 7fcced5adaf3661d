"""Pod egress masquerade (``egress.masqueradeEnabled``): SNAT to the node for traffic leaving the
cluster CIDR.

One nftables table of NovaNet's own per family (``ip novanet``, and ``ip6 novanet`` on a node
with an IPv6 PodCIDR), each replaced atomically with ``nft -f`` so the rule set is always either
the old or the new one; disabling the key, or a family the node no longer has, removes its
table. Unlike the original, which installed its iptables rule regardless of the setting, the key
is honoured.
Replies of connections made to a pod are never masqueraded: the datapath marks them
(``REPLY_MARK``) because their forward direction bypassed conntrack.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

from novanet_core.bpf.layouts import REPLY_MARK
from novanet_core.ipfamily import family_of, pick

log = logging.getLogger(__name__)

TABLE = "novanet"
_NFT_FAMILY = {4: "ip", 6: "ip6"}


def ruleset(pod_cidr: str, cluster_cidr: str) -> str:
    fam = _NFT_FAMILY[family_of(pod_cidr)]
    return (
        f"table {fam} {TABLE} {{}}\n"
        f"delete table {fam} {TABLE}\n"
        f"table {fam} {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    meta mark & {REPLY_MARK:#x} == 0 {fam} saddr {pod_cidr} {fam} daddr != {cluster_cidr} masquerade "
        "comment \"novanet masquerade\"\n"
        "  }\n"
        "}\n"
    )


def _removal(version: int) -> str:
    fam = _NFT_FAMILY[version]
    return f"table {fam} {TABLE} {{}}\ndelete table {fam} {TABLE}\n"


def apply(enabled: bool, pod_cidrs: Sequence[str], cluster_cidrs: Sequence[str]) -> None:
    """One table per family of ``pod_cidrs`` (each with the cluster CIDR of its family)."""
    text = ""
    for version in (4, 6):
        pod, cluster = pick(pod_cidrs, version), pick(cluster_cidrs, version)
        text += ruleset(pod, cluster) if enabled and pod and cluster else _removal(version)
    try:
        p = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        log.error("egress.masqueradeEnabled: nft (nftables) is not installed; pod egress is not masqueraded")
        return
    if p.returncode != 0:
        log.error("egress.masqueradeEnabled: nft failed: %s", p.stderr.strip())
    else:
        log.info("egress masquerade %s (%s -> outside %s)", "on" if enabled else "off", ", ".join(pod_cidrs),
                 ", ".join(cluster_cidrs))
