"""Which IP families this node's pods get, and whether every backend on their path carries them.

A datapath, tunnel or routing backend names the families it serves in an ``ip_families``
attribute (the datapath reports it through ``dp.status`` as ``ipFamilies``); one that does not
say serves IPv4 only, which is what every backend did before dual-stack. The agent refuses to
start a node whose PodCIDRs include a family some backend on the pods' path cannot carry: a pod
given an address that is then silently dropped (or, worse, forwarded unpoliced) would be a
half-working family, so the configuration is refused with the field to change instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from novanet_core.backends import ConfigError
from novanet_core.ipfamily import family_name, family_of, pick

DEFAULT_FAMILIES = (4,)


def served(backend: object) -> tuple[int, ...]:
    return tuple(getattr(backend, "ip_families", DEFAULT_FAMILIES))


def _names(families: Iterable[int]) -> str:
    return " and ".join(family_name(f) for f in sorted(families)) or "no family"


def check(cluster_cidrs: Sequence[str], pod_cidrs: Sequence[str], carriers: Sequence[tuple[str, Iterable[int]]]) -> None:
    """Raise ConfigError naming ``clusterCIDR`` for the first family of ``pod_cidrs`` that one of
    ``carriers`` (``(description, families)``, e.g. ``("datapath 'ebpf'", (4,))``) cannot carry."""
    for cidr in pod_cidrs:
        fam = family_of(cidr)
        for what, families in carriers:
            fams = set(families)
            if fam not in fams:
                raise ConfigError(
                    f"clusterCIDR: {pick(cluster_cidrs, fam) or cidr} is {family_name(fam)}, but {what} "
                    f"serves {_names(fams)} only in this release; use {_names(fams)} ranges only, or a "
                    f"datapath/tunnel that carries {family_name(fam)} (docs/dual-stack.md)")
