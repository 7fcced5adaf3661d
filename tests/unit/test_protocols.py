"""IP protocol and route protocol numbers: the one table, and no second copy anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from novanet_core import protocols
from novanet_core.protocols import IP_PROTOCOLS, L4_PROTOCOLS, protocol_name, protocol_number

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("novanet_core", "plugins", "contrib") for p in (ROOT / d).rglob("*.py")
           if "/tests/" not in str(p) and ".egg-info" not in str(p)]


@pytest.mark.parametrize("value,number", [("TCP", 6), ("tcp", 6), ("udp", 17), ("SCTP", 132), ("icmp", 1),
                                          ("any", 0), ("*", 0), (0, 0), (6, 6), ("17", 17), (255, 255)])
def test_protocol_number(value: str | int, number: int) -> None:
    assert protocol_number(value) == number


@pytest.mark.parametrize("value", ["tpc", "", -1, 256, True, None, 6.0, "300"])
def test_protocol_number_rejects_and_names_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"^rules\[0\]\.protocol: "):
        protocol_number(value, "rules[0].protocol")  # type: ignore[arg-type]


def test_protocol_name_round_trips() -> None:
    assert protocol_name(0) == "*"
    assert protocol_name(47) == "47"
    for name, number in IP_PROTOCOLS.items():
        assert protocol_name(number) == name
        assert protocol_number(protocol_name(number)) == number
    assert set(L4_PROTOCOLS) <= set(IP_PROTOCOLS)


def _copies(path: Path) -> list[str]:
    """Module-level constants that restate a route protocol number or an IP protocol table."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if any(n.startswith("RTPROT") for n in names):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {names[0]}")
        if isinstance(node, ast.Dict):
            keys = {k.value.upper() for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if {"TCP", "UDP"} <= keys:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: protocol table")
        if isinstance(node, ast.Tuple | ast.List):
            elts = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if elts[:3] == ["TCP", "UDP", "SCTP"]:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: protocol list")
    return out


def test_protocol_numbers_are_defined_only_in_novanet_core_protocols() -> None:
    own = Path(protocols.__file__).resolve()
    copies = [c for p in SOURCES if p.resolve() != own for c in _copies(p)]
    assert copies == [], "import these from novanet_core.protocols instead:\n" + "\n".join(copies)
