"""The novanet CLI reports bad input as one clear error (exit 1), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from novanet_core.cli.novanet import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_lab_help_lists_commands(runner: CliRunner) -> None:
    out = runner.invoke(main, ["lab", "--help"]).output
    for cmd in ("up", "down", "status", "exec", "apply", "delete", "probe", "list"):
        assert f"  {cmd}" in out


def test_bad_spec_names_the_field(runner: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("nodes: [{name: node-1}]\npods: [{name: a, namespace: nope}]\n")
    r = runner.invoke(main, ["lab", "up", "--spec", str(spec)])
    assert r.exit_code == 1
    assert "Error: invalid lab spec" in r.output and "pods[0] (nope/a).namespace" in r.output
    assert "Traceback" not in r.output


def test_missing_spec(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(main, ["lab", "up", "--spec", str(tmp_path / "none.yaml")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_bad_lab_name(runner: CliRunner) -> None:
    r = runner.invoke(main, ["lab", "status", "--name", "Not/Valid"])
    assert r.exit_code == 2 and "--name" in r.output


def test_unknown_lab(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVANET_LAB_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("NOVANET_LAB_RUN_ROOT", str(tmp_path / "run"))
    for cmd, *rest in (["status"], ["probe"], ["apply", "-f", "-"], ["exec", "x/a", "--", "true"]):
        r = runner.invoke(main, ["lab", cmd, "--name", "no-such-lab-zz", *rest],
                          input="kind: Namespace\nmetadata: {name: q}\n")
        assert r.exit_code == 1, (cmd, r.output)
        assert "no-such-lab-zz" in r.output and "Traceback" not in r.output


def test_bad_apply_file(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("kind: Pod\nmetadata: {name: a}\nspec: {containers: [{ports: [{containerPort: 80, protocol: XX}]}]}\n")
    r = runner.invoke(main, ["lab", "apply", "--name", "whatever", "-f", str(f)])
    assert r.exit_code == 1 and "spec.containers[0].ports[0].protocol" in r.output
