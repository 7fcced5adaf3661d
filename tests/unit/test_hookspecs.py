"""Every hook spec is documented (exact signature, in docs/plugin-hooks.md) and has a test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from novanet_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]


def _test_function_names() -> set[str]:
    names = set()
    for path in list((ROOT / "tests").rglob("test_*.py")) + list((ROOT / "plugins").rglob("tests/test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


@pytest.mark.parametrize("name", hookspecs.all_hook_names())
def test_hookspec_is_documented_with_its_signature(name):
    doc = (ROOT / "docs" / "plugin-hooks.md").read_text()
    assert f"## {name}\n" in doc, f"{name} has no section in docs/plugin-hooks.md"
    assert hookspecs.hook_signature(name) in doc, f"docs/plugin-hooks.md shows an outdated signature for {name}"


@pytest.mark.parametrize("name", hookspecs.all_hook_names())
def test_hookspec_has_a_test(name):
    names = _test_function_names()
    assert any(n == f"test_hook_{name}" or n.startswith(f"test_hook_{name}_") for n in names), (
        f"no test_hook_{name} anywhere in tests/")


@pytest.mark.parametrize("name", hookspecs.all_hook_names())
def test_hookspec_has_a_docstring_and_type_hints(name):
    fn = getattr(hookspecs, name)
    assert fn.__doc__ and len(fn.__doc__.strip()) > 40
    assert "return" in fn.__annotations__
    assert all(p in fn.__annotations__ for p in fn.__code__.co_varnames[: fn.__code__.co_argcount])


def test_every_documented_hook_exists():
    doc = (ROOT / "docs" / "plugin-hooks.md").read_text()
    documented = {line[3:].strip() for line in doc.splitlines() if line.startswith("## novanet_")}
    assert documented == set(hookspecs.all_hook_names())
