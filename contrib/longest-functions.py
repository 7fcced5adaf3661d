"""The longest functions of the core and the plugins, longest first (decorators included, tests
and build trees left out): `python3 contrib/longest-functions.py [N]`.

A function of 60 lines or more should be split along its seams, or say in a comment why not.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "build", ".venv", "__pycache__"}


def lengths() -> list[tuple[int, str, str]]:
    out = []
    for top in ("novanet_core", "plugins", "contrib"):
        for f in sorted((ROOT / top).rglob("*.py")):
            rel = f.relative_to(ROOT)
            if SKIP & set(rel.parts) or any(p.endswith(".egg-info") for p in rel.parts):
                continue
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                    out.append((node.end_lineno - start + 1, f"{rel}:{node.lineno}", node.name))
    return sorted(out, reverse=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for length, where, name in lengths()[:n]:
        print(f"{length:4d}  {where}  {name}")


if __name__ == "__main__":
    main()
