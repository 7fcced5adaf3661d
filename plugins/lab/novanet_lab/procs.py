"""Background processes of a lab: start inside a netns, track by pid file, find and stop them.

Pid files can be stale (reused pids) or missing (a crash mid-``up``), so stopping never trusts a
pid alone: a pid counts as the lab's only if its command line holds one of the lab's paths, or if
it lives in one of the lab's network namespaces (checked through /proc/<pid>/ns/net).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from novanet_lab import cgroups, netns
from novanet_lab.errors import LabError

# Programs whose command line, together with a lab path, marks them as lab daemons (the pod
# server's old module name too: labs brought up before the lab was its own distribution).
LAB_PROGRAMS = ("novanet-agent", "novanet-dataplane", "novanet_lab.podserver", "novanet_core.lab.podserver")


def start_in_netns(
    argv: Sequence[str], netns_name: str, log_path: Path, pid_path: Path, env: dict[str, str] | None = None,
    cgroup: Path | None = None,
) -> int:
    """Start argv inside the named netns (nsenter --net, so bpffs stays visible) in the background,
    inside ``cgroup`` when given (a node's cgroup: novanet_lab.cgroups)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full = ["nsenter", f"--net={netns.NETNS_DIR / netns_name}", *argv]
    if cgroup is not None:
        full = cgroups.exec_argv(cgroup, full)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not killed with the CLI's terminal, owns its process group
                env=env,
                close_fds=True,
            )
        except FileNotFoundError as e:
            raise LabError(f"cannot start {argv[0]}: {e.strerror}: {e.filename}") from None
    # sh and nsenter exec the program (no --fork needed for a net-only switch), so this pid is the daemon's.
    write_pid(pid_path, proc.pid)
    return proc.pid


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_running(pid: int | None) -> bool:
    """Alive and not a zombie."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def reap() -> None:
    """Collect exited children of this process so that they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def owned_pid(path: Path, markers: Sequence[str]) -> int | None:
    """The pid in ``path`` if that process is still one of ours (command line holds a marker)."""
    pid = read_pid(path)
    if not pid or not is_running(pid):
        return None
    cl = cmdline(pid)
    for _ in range(20):
        # /proc/PID/cmdline reads empty while the process is inside execve (nsenter exec'ing the
        # daemon): that is a process starting, not one that is gone.
        if cl or not is_running(pid):
            break
        time.sleep(0.005)
        cl = cmdline(pid)
    return pid if any(m in cl for m in markers) else None


def find_lab_processes(netns_names: Iterable[str], markers: Sequence[str]) -> list[int]:
    """Every process in one of the lab's netns, or a lab daemon whose command line names the lab."""
    inodes = {i for i in (netns.inode(n) for n in netns_names) if i is not None}
    me = {os.getpid(), os.getppid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in me:
            continue
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if ino in inodes:
            found.append(pid)
            continue
        cl = cmdline(pid)
        if any(p in cl for p in LAB_PROGRAMS) and any(m in cl for m in markers):
            found.append(pid)
    return found


def terminate(pids: Iterable[int], grace: float = 5.0) -> list[int]:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left. Returns the pids killed hard."""
    pids = [p for p in set(pids) if is_running(p)]
    for p in pids:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not any(is_running(p) for p in pids):
            return []
        time.sleep(0.05)
    hard = [p for p in pids if is_running(p)]
    for p in hard:
        _signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(is_running(p) for p in hard):
        reap()
        time.sleep(0.02)
    return hard


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else "(log is empty)"
