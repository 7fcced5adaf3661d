"""The lab is a plugin like any other: found through its entry point, it adds ``novanet lab`` and
resolves ``novanetctl --node``; the core never imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from novanet_core.cli.novanetctl import CtlGroup
from novanet_core.config.models import NovaNetConfig
from novanet_core.plugins.manager import PluginHost

ROOT = Path(__file__).resolve().parents[3]


def _host() -> PluginHost:
    return PluginHost(NovaNetConfig(), "cli")


def test_lab_plugin_is_discovered_through_its_entry_point():
    rec = next(r for r in _host().info() if r["name"] == "lab")
    assert rec["distribution"] == "novanet-lab" and "novanet_register_cli" in rec["hooks"]


def test_lab_plugin_adds_novanet_lab_and_nothing_to_novanetctl():
    host = _host()
    novanet, ctl = click.Group("novanet"), CtlGroup("novanetctl")
    host.pm.hook.novanet_register_cli.call_historic(kwargs={"cli": novanet, "program": "novanet"})
    host.pm.hook.novanet_register_cli.call_historic(kwargs={"cli": ctl, "program": "novanetctl"})
    assert "lab" in novanet.commands
    assert "lab" not in ctl.commands and "lab" in ctl.node_resolvers


def test_node_resolver_names_the_labs_it_looked_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOVANET_LAB_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("NOVANET_LAB_RUN_ROOT", str(tmp_path / "run"))
    ctl = CtlGroup("novanetctl", params=[click.Option(["--node"]), click.Option(["--lab"])],
                   callback=click.pass_context(lambda ctx, node, lab: ctx.command.node_socket(node, lab)))
    ctl.add_command(click.Command("x", callback=lambda: None))
    r = CliRunner().invoke(ctl, ["--node", "node-1", "--lab", "zz-none", "x"])
    assert r.exit_code == 2 and "no installed plugin resolves node names" in r.output
    _host().pm.hook.novanet_register_cli.call_historic(kwargs={"cli": ctl, "program": "novanetctl"})
    r = CliRunner().invoke(ctl, ["--node", "node-1", "--lab", "zz-none", "x"])
    assert r.exit_code == 2 and "no running lab node of that name (labs: zz-none)" in r.output
    sock = tmp_path / "run" / "zz-some" / "node-1" / "agent.sock"
    sock.parent.mkdir(parents=True)
    sock.touch()
    assert ctl.node_socket("node-1", "zz-some") == str(sock)


def test_the_core_never_imports_the_lab():
    for path in (ROOT / "novanet_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "novanet_lab" for n in names), f"{path} imports {names}"
