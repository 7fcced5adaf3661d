"""Restart a lab node's daemons, the way a DaemonSet pod restart (or a crash) would.

``novanet lab restart`` exists to exercise the guide's restart semantics: pinned BPF state keeps
pods talking while the agent or the dataplane is gone, and the restarted process reconciles.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from novanet_lab import agents, daemonset, procs
from novanet_lab import state as lab_state
from novanet_lab.daemonset import node as ds_node
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.state import NodeState


def restart(lab: str, nodes: list[str] | None, daemons: list[str], hard: bool, timeout: float = 60.0) -> list[dict[str, Any]]:
    paths = LabPaths(lab)
    st = lab_state.load(paths)
    if st is None:
        raise LabError(f"lab {lab} is not up")
    chosen = nodes or list(st.nodes)
    unknown = [n for n in chosen if n not in st.nodes]
    if unknown:
        raise LabError(f"--node {', '.join(unknown)}: no such node in lab {lab} (nodes: {', '.join(st.nodes)})")
    report = []
    for name in chosen:
        node = st.nodes[name]
        if ds_node.is_daemonset(paths, name):
            report += _rolling_restart(paths, node, daemons, hard, timeout)
            continue
        for daemon in daemons:
            old = agents.running_pid(paths, name, daemon)
            t0 = time.monotonic()
            if old is not None:
                os.kill(old, signal.SIGKILL if hard else signal.SIGTERM)
                deadline = time.monotonic() + 10
                while procs.is_running(old) and time.monotonic() < deadline:
                    procs.reap()
                    time.sleep(0.02)
            new = agents.start(paths, node, daemon)
            if daemon == "dataplane":
                sock = paths.socket(name, "dataplane")
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if sock.exists() and agents.running_pid(paths, name, "dataplane") == new:
                        try:
                            with ApiClient(str(sock), timeout=2) as c:
                                c.call("dp.status")
                            break
                        except (Unreachable, ApiError, OSError):
                            pass  # the old socket file, or the new process still loading programs
                    time.sleep(0.05)
            else:
                agents.wait_ready(paths, [node], 0, timeout)
            report.append({"node": name, "daemon": daemon, "oldPid": old, "newPid": new,
                           "signal": "KILL" if hard else "TERM", "seconds": round(time.monotonic() - t0, 3)})
    return report


def _rolling_restart(paths: LabPaths, node: NodeState, daemons: list[str], hard: bool,
                     timeout: float) -> list[dict[str, Any]]:
    """A daemonset node restarts as its DaemonSet would: the whole pod is deleted (SIGTERM and the
    grace period, or SIGKILL with ``hard``) and created again; the report has a line per daemon."""
    old = {d: agents.running_pid(paths, node.name, d) for d in daemons}
    t0 = time.monotonic()
    ds_node.rolling_restart(paths, node.name, daemonset.image_of(paths, node.name),
                            grace=0 if hard else ds_node.STOP_GRACE)
    agents.wait_ready(paths, [node], 0, timeout)
    seconds = round(time.monotonic() - t0, 3)
    return [{"node": node.name, "daemon": d, "oldPid": old[d], "newPid": agents.running_pid(paths, node.name, d),
             "signal": "KILL" if hard else "TERM", "seconds": seconds} for d in daemons]
