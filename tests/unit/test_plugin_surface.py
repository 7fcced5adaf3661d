"""Plugins meet the core only through its documented public surface.

The surface is the table in docs/plugin-authoring.md ("The public surface"); this test reads it
there, so the documentation and the rule cannot drift apart. Every distribution under plugins/
and contrib/ (a folder with a pyproject.toml) is checked, its tests excepted; the lab, a tool
that drives the core, has an allowance of its own in the same table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugin-authoring.md"
LAB = "plugins/lab"


def surface() -> dict[str, set[str]]:
    """Who -> the module patterns the doc's table grants them (``x.*``: x and its submodules)."""
    text = DOC.read_text()
    section = text.split("## 7. The public surface", 1)[1].split("\n## ", 1)[0]
    out: dict[str, set[str]] = {"plugins": set(), "lab": set()}
    for m in re.finditer(r"^\| `(novanet_core[\w.*]*)` \| (plugins|lab) \|", section, re.M):
        out[m.group(2)].add(m.group(1))
    return out


def allowed(module: str, patterns: set[str]) -> bool:
    return any(module == p or (p.endswith(".*") and (module == p[:-2] or module.startswith(p[:-1])))
               for p in patterns)


def distributions() -> list[Path]:
    return sorted(p.parent for d in ("plugins", "contrib") for p in (ROOT / d).glob("*/pyproject.toml"))


def core_imports(dist: Path) -> list[tuple[str, int, list[str]]]:
    """(file, line, candidate module names) of every import of novanet_core in a distribution's
    packages; ``from a import b`` counts as allowed when ``a`` or every ``a.b`` is."""
    out = []
    for f in sorted(dist.rglob("*.py")):
        rel = f.relative_to(dist)
        if rel.parts[0] in ("tests", "build") or ".egg-info" in str(rel):
            continue
        where = str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "novanet_core":
                        out.append((where, node.lineno, [a.name]))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "novanet_core":
                out.append((where, node.lineno,
                            [node.module, *(f"{node.module}.{a.name}" for a in node.names)]))
    return out


def test_the_documented_surface_is_real() -> None:
    s = surface()
    assert s["plugins"] and s["lab"], "docs/plugin-authoring.md lost its public surface table"
    for pattern in s["plugins"] | s["lab"]:
        path = ROOT / pattern.removesuffix(".*").replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), f"{pattern}: no such module"


def test_plugins_import_only_the_public_surface() -> None:
    s = surface()
    dists = distributions()
    assert any(d.name == "ebpf-policy" for d in dists)
    assert any(d.parent.name == "contrib" for d in dists), "the contrib plugins are not checked"
    bad = []
    for dist in dists:
        grant = s["plugins"] | (s["lab"] if str(dist.relative_to(ROOT)) == LAB else set())
        for f, line, names in core_imports(dist):
            module, members = names[0], names[1:]
            if allowed(module, grant) or (members and all(allowed(m, grant) for m in members)):
                continue
            bad.append(f"{f}:{line}: {module}")
    assert bad == [], ("imports of core modules outside the public surface (docs/plugin-authoring.md, "
                       "'The public surface'):\n" + "\n".join(bad))


def test_the_check_catches_an_internal_import(tmp_path: Path) -> None:
    pkg = tmp_path / "novanet_acme"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text("from novanet_core.agent.podnet import host_ifname\n"
                                   "from novanet_core import hookspecs\nfrom novanet_core.bpf import syscall\n")
    found = core_imports(tmp_path)
    grant = surface()["plugins"]
    verdict = [allowed(n[0], grant) or all(allowed(m, grant) for m in n[1:]) for _, _, n in found]
    assert verdict == [False, True, True]


def packages(dist: Path) -> set[str]:
    """The top-level import packages a distribution ships (``novanet_vxlan``, ...)."""
    return {p.parent.name for p in dist.glob("*/__init__.py") if p.parent.name not in ("tests", "build")}


def top_level_imports(root: Path) -> list[tuple[str, int, str]]:
    """(file, line, top-level module) of every absolute import under ``root``, tests excepted."""
    out = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if rel.parts[0] in ("tests", "build") or ".egg-info" in str(rel):
            continue
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            out += [(str(f.relative_to(ROOT)), node.lineno, n.split(".")[0]) for n in names]
    return out


def test_the_core_imports_no_plugin_and_plugins_import_no_other_plugin() -> None:
    owner = {pkg: dist for dist in distributions() for pkg in packages(dist)}
    assert "novanet_ebpf_policy" in owner and "novanet_vxlan" in owner
    bad = [f"{f}:{line}: {mod}" for f, line, mod in top_level_imports(ROOT / "novanet_core") if mod in owner]
    for dist in distributions():
        bad += [f"{f}:{line}: {mod}" for f, line, mod in top_level_imports(dist)
                if mod in owner and owner[mod] != dist]
    assert bad == [], "imports across the core/plugin boundary (docs/architecture.md):\n" + "\n".join(bad)
