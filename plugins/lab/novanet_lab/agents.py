"""Node daemons of a lab: start novanet-dataplane and novanet-agent in a node netns, wait for them.

Readiness is the agent's own word: method ``status`` on its socket answering ``ready: true``, and
``stateVersion`` reaching the manifest VERSION the lab wrote (the agent has applied that much).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from novanet_lab import procs
from novanet_lab.cni import venv_bin
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.state import NodeState

DAEMONS = ("dataplane", "agent")
BINARIES = {"dataplane": "novanet-dataplane", "agent": "novanet-agent"}


def binary(daemon: str) -> Path:
    return venv_bin() / BINARIES[daemon]


def check_binaries(names: Iterable[str] = ("novanet-dataplane", "novanet-agent", "novanet-cni")) -> None:
    missing = [n for n in names if not (venv_bin() / n).exists()]
    if missing:
        raise LabError(
            f"{', '.join(missing)} not found in {venv_bin()} (install the project into this venv: pip install -e .)"
        )


def start(paths: LabPaths, node: NodeState, daemon: str) -> int:
    return procs.start_in_netns(
        [str(binary(daemon)), "--config", node.config],
        node.netns,
        paths.daemon_log(node.name, daemon),
        paths.daemon_pid(node.name, daemon),
    )


def markers(paths: LabPaths) -> tuple[str, str]:
    return (f"{paths.state_dir}/", f"{paths.run_dir}/")


def running_pid(paths: LabPaths, node: str, daemon: str) -> int | None:
    from novanet_lab.daemonset import node as ds_node

    if ds_node.is_daemonset(paths, node):
        return ds_node.daemon_pid(paths, node, daemon)
    return procs.owned_pid(paths.daemon_pid(node, daemon), markers(paths))


def _exited(paths: LabPaths, node: str) -> LabError | None:
    """The error for a node whose daemon process is gone, or None while both run. A daemonset
    node's containers are restarted by its podman (a crash-looping daemon shows in the timeout's
    message instead)."""
    from novanet_lab.daemonset import node as ds_node

    if ds_node.is_daemonset(paths, node):
        return None
    for daemon in ("agent", "dataplane"):
        if running_pid(paths, node, daemon) is None:
            procs.reap()
            return _died(paths, node, daemon)
    return None


def wait_socket(paths: LabPaths, node: NodeState, daemon: str, timeout: float) -> None:
    """Wait until the daemon's socket exists; fail early, with its log, if it exits."""
    sock = paths.socket(node.name, daemon)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists():
            return
        if running_pid(paths, node.name, daemon) is None:
            procs.reap()
            raise _died(paths, node.name, daemon)
        time.sleep(0.05)
    raise LabError(
        f"node {node.name}: {BINARIES[daemon]} did not create {sock} within {timeout:.0f} s; log "
        f"{paths.daemon_log(node.name, daemon)}:\n{procs.log_tail(paths.daemon_log(node.name, daemon))}"
    )


def _died(paths: LabPaths, node: str, daemon: str) -> LabError:
    log = paths.daemon_log(node, daemon)
    refused = config_refusal(log, BINARIES[daemon])
    if refused:
        # a configuration only the daemon's backends can judge (which families a tunnel carries):
        # its own message names the key, so it leads, with the log for the rest
        return LabError(f"node {node}: {BINARIES[daemon]} refused its configuration: {refused}\n(its log: {log}; `lab up "
                        "--keep-on-failure` keeps it)")
    return LabError(f"node {node}: {BINARIES[daemon]} exited; last lines of {log}:\n{procs.log_tail(log)}")


def config_refusal(log: Path, binary: str) -> str | None:
    """The message of a daemon that stopped on its configuration (exit code 2): ``<binary>: MSG``
    before its logging starts, ``fatal: MSG`` from a check made at start."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines[-50:]):
        if line.startswith(f"{binary}: "):
            return line.removeprefix(f"{binary}: ").strip()
        _, sep, msg = line.partition(" fatal: ")
        if sep:
            return msg.strip()
    return None


def agent_status(paths: LabPaths, node: str, timeout: float = 2.0) -> dict[str, Any]:
    with ApiClient(str(paths.socket(node, "agent")), timeout=timeout) as c:
        result = c.call("status")
    if not isinstance(result, dict):
        raise ApiError("bad_result", f"status returned {type(result).__name__}, not an object")
    return result


def wait_ready(paths: LabPaths, nodes: Iterable[NodeState], version: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until every agent is ready and has applied manifest ``version``; returns their status."""
    nodes = list(nodes)
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    done: dict[str, dict[str, Any]] = {}
    while True:
        for n in nodes:
            if n.name in done:
                continue
            try:
                st = agent_status(paths, n.name)
            except (Unreachable, OSError) as e:
                exited = _exited(paths, n.name)
                if exited is not None:
                    raise exited from None
                last[n.name] = f"socket not answering ({e})"
                continue
            except (ApiError, ValueError) as e:
                last[n.name] = f"status failed: {e}"
                continue
            sv = st.get("stateVersion")
            if st.get("ready") is True and isinstance(sv, int) and sv >= version:
                done[n.name] = st
            else:
                last[n.name] = f"ready={st.get('ready')!r} stateVersion={sv!r} (want >= {version})" + (
                    f" {st['reason']}" if st.get("reason") else ""
                )
        if len(done) == len(nodes):
            return done
        if time.monotonic() >= deadline:
            lagging = "\n".join(f"  {n}: {why}{_pod_state(paths, n)}" for n, why in last.items() if n not in done)
            raise LabError(f"agents not ready with manifest version {version} after {timeout:.0f} s:\n{lagging}")
        time.sleep(0.05)


def _pod_state(paths: LabPaths, node: str) -> str:
    from novanet_lab.daemonset import node as ds_node

    return ("\n" + ds_node.describe(paths, node)) if ds_node.is_daemonset(paths, node) else ""
