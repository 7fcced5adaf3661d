"""The programs NovaNet's node code runs, found in its source (so a new one cannot be forgotten).

Read with ``ast`` from the code that runs on a node (``novanet_core`` and the plugins except the
lab): every ``subprocess.run/Popen/call/check_call/check_output`` and debug-bundle
``add_command`` call; its argv is followed through list literals (``sys.executable`` is the
image's python3), ``[*argv, ...]``, names bound
to list literals in the same function, and ``for name, argv in ((..., [...]), ...)`` loops. A call
whose program cannot be read that way is reported as unresolved, so that it is looked at.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output"}


def node_sources() -> list[Path]:
    files = sorted((ROOT / "novanet_core").rglob("*.py"))
    for plugin in sorted((ROOT / "plugins").iterdir()):
        if plugin.name == "lab" or not plugin.is_dir():
            continue
        files += [p for p in sorted(plugin.rglob("*.py")) if not {"tests", "build"} & set(p.relative_to(plugin).parts)]
    return files


def _program(expr: ast.expr, bound: dict[str, list[ast.expr]]) -> list[str | None]:
    if isinstance(expr, (ast.List, ast.Tuple)) and expr.elts:
        first = expr.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return [first.value]
        if isinstance(first, ast.Starred):
            return _program(first.value, bound)
        if (isinstance(first, ast.Attribute) and first.attr == "executable" and isinstance(first.value, ast.Name)
                and first.value.id == "sys"):
            return ["python3"]  # the interpreter running the daemon: the image's venv python
        return [None]
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "list" and expr.args:
        return _program(expr.args[0], bound)
    if isinstance(expr, ast.Name) and expr.id in bound:
        return [p for e in bound[expr.id] for p in _program(e, bound)]
    return [None]


def _bindings(fn: ast.AST) -> dict[str, list[ast.expr]]:
    bound: dict[str, list[ast.expr]] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    bound.setdefault(t.id, []).append(node.value)
        elif isinstance(node, ast.For) and isinstance(node.iter, (ast.Tuple, ast.List)):
            if isinstance(node.target, ast.Tuple):
                for i, t in enumerate(node.target.elts):
                    if isinstance(t, ast.Name):
                        bound.setdefault(t.id, []).extend(
                            e.elts[i] for e in node.iter.elts if isinstance(e, (ast.Tuple, ast.List)) and len(e.elts) > i)
    return bound


def shellouts() -> tuple[dict[str, list[str]], list[str]]:
    """(program -> where it is called, unresolved call sites)."""
    found: dict[str, list[str]] = {}
    unresolved: list[str] = []
    for path in node_sources():
        tree = ast.parse(path.read_text(), str(path))
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] or [tree]
        seen: set[int] = set()
        for fn in scopes:
            bound = _bindings(fn)
            for call in ast.walk(fn):
                if not isinstance(call, ast.Call) or id(call) in seen or not isinstance(call.func, ast.Attribute):
                    continue
                f = call.func
                if isinstance(f.value, ast.Name) and f.value.id == "subprocess" and f.attr in SUBPROCESS and call.args:
                    argv = call.args[0]
                elif f.attr == "add_command" and len(call.args) == 2:
                    argv = call.args[1]
                else:
                    continue
                seen.add(id(call))
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                for prog in _program(argv, bound):
                    if prog is None:
                        unresolved.append(where)
                    else:
                        found.setdefault(prog, []).append(where)
    return found, unresolved
