"""Truth tables in the format the Kubernetes netpol e2e suite prints (truthtable.go PrettyPrint).

Rows are sources, columns are destinations, ``.`` = allowed, ``X`` = blocked, ``?`` = not probed;
cells are tab-separated and the header starts with ``-``. One table per port/protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from novanet_lab.probe import ProbeResult


def truth_table(froms: Sequence[str], tos: Sequence[str], values: dict[tuple[str, str], bool], indent: str = "") -> str:
    lines = [indent + "\t".join(["-", *tos])]
    for f in froms:
        row = [f]
        for t in tos:
            v = values.get((f, t))
            row.append("?" if v is None else ("." if v else "X"))
        lines.append(indent + "\t".join(row))
    return "\n".join(lines)


def results_tables(results: Iterable[ProbeResult]) -> str:
    """One titled truth table per (family, protocol, port), in first-seen order. The title names
    the family (``TCP/80 IPv6: ...``) unless every result is IPv4, so an IPv4 lab's tables read as
    they always did."""
    groups: dict[tuple[int, int, str], list[ProbeResult]] = {}
    for r in results:
        groups.setdefault((r.family, r.port, r.protocol), []).append(r)
    named = any(fam not in (0, 4) for fam, _, _ in groups)
    out = []
    for (fam, port, proto), rs in groups.items():
        froms = list(dict.fromkeys(r.src for r in rs))
        tos = list(dict.fromkeys(r.dst for r in rs))
        values = {(r.src, r.dst): r.allowed for r in rs}
        blocked = sum(1 for r in rs if not r.allowed)
        label = f" IPv{fam}" if named and fam else ""
        out.append(f"{proto}/{port}{label}: {len(rs) - blocked} allowed, {blocked} blocked\n" + truth_table(froms, tos, values))
    return "\n\n".join(out)
