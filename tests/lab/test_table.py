"""Truth-table output in the upstream e2e format (no root needed)."""

from __future__ import annotations

from novanet_lab.probe import ProbeResult
from novanet_lab.table import results_tables, truth_table


def test_matches_upstream_pretty_print() -> None:
    # truthtable.go PrettyPrint: header "-" + tos, tab separated; "." allowed, "X" blocked, "?" unknown.
    values = {("x/a", "x/a"): True, ("x/a", "x/b"): False, ("x/b", "x/a"): True}
    assert truth_table(["x/a", "x/b"], ["x/a", "x/b"], values) == "-\tx/a\tx/b\nx/a\t.\tX\nx/b\t.\t?"


def test_indent() -> None:
    assert truth_table(["a"], ["b"], {("a", "b"): True}, indent="  ") == "  -\tb\n  a\t."


def test_one_table_per_port_and_protocol() -> None:
    rs = [
        ProbeResult(s, d, port, proto, not (d == "y/b" and port == 81), "x", 1.0)
        for port, proto in ((80, "TCP"), (81, "TCP"), (80, "UDP"))
        for s in ("x/a", "y/b")
        for d in ("x/a", "y/b")
    ]
    out = results_tables(rs)
    blocks = out.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "TCP/80: 4 allowed, 0 blocked",
        "TCP/81: 2 allowed, 2 blocked",
        "UDP/80: 4 allowed, 0 blocked",
    ]
    assert blocks[1].splitlines()[1:] == ["-\tx/a\ty/b", "x/a\t.\tX", "y/b\t.\tX"]


def test_probe_json_shape() -> None:
    r = ProbeResult("x/a", "y/b", 80, "TCP", True, "connected", 0.4567)
    assert r.to_json() == {"from": "x/a", "to": "y/b", "port": 80, "protocol": "TCP", "allowed": True,
                           "reason": "connected", "ms": 0.46}
