"""Talking to a running FRR through ``vtysh`` (FRR 8.4 has no northbound API for bgpd).

Configuration goes in as one vtysh invocation with one ``-c`` per command: vtysh keeps a single
vty session across them (so ``router bgp N`` context carries over) and stops at the first command
that fails, exiting non-zero with FRR's ``% ...`` message on stdout. What ran before the failure
stays applied; the caller rolls it back (see :mod:`novanet_frr_bgp.backend`).
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, field
from typing import Any

from novanet_frr_bgp.frrconf import redact

log = logging.getLogger(__name__)

# vtysh output that means "could not talk to the daemons", as opposed to a rejected command.
_UNREACHABLE = ("failed to connect", "is not running", "Exiting: failed", "connection refused", "No such file")


class FrrUnavailable(Exception):
    """vtysh could not reach FRR (daemons down, wrong pathspace/socket)."""


@dataclass
class ApplyResult:
    ok: bool
    commands: list[str] = field(default_factory=list)
    failed_command: str | None = None
    message: str = ""


class Vtysh:
    def __init__(self, binary: str = "vtysh", pathspace: str | None = None, vty_socket: str | None = None,
                 timeout: float = 10.0):
        self.binary, self.pathspace, self.vty_socket, self.timeout = binary, pathspace, vty_socket, timeout

    def argv(self) -> list[str]:
        a = [self.binary]
        if self.pathspace:
            a += ["-N", self.pathspace]
        if self.vty_socket:
            a += ["--vty_socket", self.vty_socket]
        return a

    def _run(self, commands: list[str], daemon: str | None = None, echo: bool = False) -> subprocess.CompletedProcess[str]:
        argv = self.argv() + (["-d", daemon] if daemon else []) + (["-E"] if echo else [])
        for c in commands:
            argv += ["-c", c.strip()]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise FrrUnavailable(f"{self.binary} not found (install FRR, or set routing.settings.vtysh)") from None
        except subprocess.TimeoutExpired:
            raise FrrUnavailable(f"vtysh did not answer within {self.timeout:.0f} s") from None

    def show(self, command: str, daemon: str | None = None) -> str:
        r = self._run([command], daemon)
        if r.returncode != 0:
            text = (r.stdout + r.stderr).strip()
            if any(m in text for m in _UNREACHABLE) or not text:
                raise FrrUnavailable(text or f"vtysh exited with {r.returncode}")
            raise FrrUnavailable(f"{command!r} failed: {text.splitlines()[-1]}")
        return r.stdout

    def show_json(self, command: str, daemon: str | None = None) -> Any:
        out = self.show(command, daemon)
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError:
            raise FrrUnavailable(f"{command!r} did not return JSON: {out[:200]!r}") from None

    def daemons(self) -> set[str]:
        """The FRR daemons vtysh is connected to (``show daemons``)."""
        return set(self.show("show daemons").split())

    def running_config(self) -> str:
        return self.show("show running-config")

    def configure(self, commands: list[str]) -> ApplyResult:
        """Run ``commands`` inside ``configure terminal``; stop at the first rejected one."""
        if not commands:
            return ApplyResult(ok=True)
        # -E echoes each command after its prompt, which tells which one FRR rejected.
        r = self._run(["configure terminal", *commands, "end"], echo=True)
        out = r.stdout.strip()
        if r.returncode == 0 and not any(line.startswith("%") for line in out.splitlines()):
            return ApplyResult(ok=True, commands=list(commands))
        if any(m in out + r.stderr for m in _UNREACHABLE) and not any(ln.startswith("%") for ln in out.splitlines()):
            raise FrrUnavailable((out + " " + r.stderr).strip())
        failed = _failed_command(out, commands)
        msg = next((line for line in out.splitlines() if line.startswith("%")), out or r.stderr.strip())
        log.warning("vtysh rejected %r: %s", redact([failed or "?"])[0], msg)
        return ApplyResult(ok=False, commands=list(commands), failed_command=failed, message=msg)


def _failed_command(out: str, commands: list[str]) -> str | None:
    """The last command echoed (``prompt# command``) before FRR's first ``%`` error line."""
    wanted = {c.strip() for c in commands}
    last = None
    for line in out.splitlines():
        if line.startswith("%"):
            return last
        _, sep, cmd = line.partition("# ")
        if sep and cmd.strip() in wanted:
            last = cmd.strip()
    return None
