"""Every novanetctl command that talks to a daemon exits 3 with one line, never a traceback, when
the daemon is down; and every command of both programs answers --version."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from novanet_core import __version__
from novanet_core.api.protocol import encode
from novanet_core.cli.novanetctl import build_cli
from novanet_core.cli.tree import walk

# Commands that never need a daemon, and the arguments some commands require.
NO_DAEMON = {("version",), ("completion",), ("debug-bundle",)}
ARGS = {("completion",): ["bash"], ("policy", "explain"): ["--from", "x/a", "--to", "x/b", "--port", "80"]}


def _leaves(group: click.Group) -> list[tuple[str, ...]]:
    return [p for p, c in walk(group) if p and not (isinstance(c, click.Group) and c.commands
                                                    and not c.invoke_without_command)]


CLI = build_cli()


def _run(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(CLI, args, prog_name="novanetctl")
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("path", [p for p in _leaves(CLI) if p not in NO_DAEMON], ids=" ".join)
def test_agent_down_exits_3_with_one_line(path: tuple[str, ...], tmp_path: Path) -> None:
    code, out, err = _run(["--agent-socket", str(tmp_path / "none.sock"), *path, *ARGS.get(path, [])])
    assert code == 3, (path, code, out, err)
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1 and "not reachable" in lines[0], err


def _fake_agent(path: str, stop: threading.Event) -> threading.Thread:
    """An agent that answers config.get with a dataplane socket nobody listens on."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(0.2)
    import json

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            with c, c.makefile("rb") as f:
                for line in f:
                    req = json.loads(line)
                    if req["method"] == "config.get":
                        res = {"sockets": {"dataplane": path + ".dataplane"}}
                        c.sendall(encode({"v": 1, "id": req["id"], "result": res}))
                    elif req["method"] == "identity.list":
                        c.sendall(encode({"v": 1, "id": req["id"], "result": []}))
                    else:  # what an agent whose dataplane is down answers
                        c.sendall(encode({"v": 1, "id": req["id"],
                                          "error": {"code": "unavailable", "message": "dataplane not connected"}}))
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("path", [("flows",), ("drops",), ("bpf",), ("policy",), ("endpoints",), ("status",)],
                         ids=" ".join)
def test_dataplane_down_exits_3(path: tuple[str, ...], tmp_path: Path) -> None:
    sock = str(tmp_path / "agent.sock")
    stop = threading.Event()
    t = _fake_agent(sock, stop)
    try:
        extra = ["--datapath"] if path == ("policy",) else []
        code, out, err = _run(["--agent-socket", sock, *path, *extra])
    finally:
        stop.set()
        t.join(2)
    assert code == 3, (path, out, err)
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err


def test_version_on_every_command() -> None:
    for path, _ in walk(CLI):
        code, out, _ = _run([*path, "--version"])
        assert code == 0 and out.strip() == f"novanetctl {__version__}", (path, out)


def test_novanet_version_on_every_command() -> None:
    from novanet_core.cli.novanet import main

    r = CliRunner().invoke(main, ["--version"], prog_name="novanet")  # also registers plugin commands
    assert r.exit_code == 0 and r.stdout.strip() == f"novanet {__version__}"
    for path, _ in walk(main):
        r = CliRunner().invoke(main, [*path, "--version"], prog_name="novanet")
        assert r.exit_code == 0 and r.stdout.strip() == f"novanet {__version__}", (path, r.output)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    code, out, _ = _run(["completion", shell])
    assert code == 0 and "_NOVANETCTL_COMPLETE" in out
