"""FRR for native-routing labs: zebra, bgpd and bfdd per node (and per ToR router) netns.

Each FRR instance runs with pathspace ``-N <lab>_<name>`` (``<name>`` is the node or router
name), so ``vtysh -N <lab>_<name> -c "show bgp summary"`` reaches it. FRR derives its socket
directory from the pathspace (``/run/frr/<pathspace>/``); the lab makes that path a symlink to
``/run/novanet-lab/<lab>/frr/<name>/``, where the sockets, startup configs, pid files and logs
really live, and gives every daemon ``-f``/``-i``/``--log`` inside it. Nothing is written to
``/etc/frr``. ``lab down`` stops the daemons with every other process in the lab's netns and
removes the symlinks by name (:func:`cleanup`), so it also cleans up after a crash.

The startup configs hold only what FRR needs before NovaNet talks to it (``frr defaults
datacenter``, as the original's FRR sidecar, and a hostname); a node's agent configures BGP/BFD
through vtysh. Routers get their whole config at startup (:mod:`novanet_lab.routers`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import time
from pathlib import Path

from novanet_lab import podroutes, procs
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths

FRR_BIN = Path(os.environ.get("NOVANET_LAB_FRR_BIN", "/usr/lib/frr"))
FRR_RUN = Path("/run/frr")  # FRR's compiled-in state dir (/var/run/frr); pathspaces live below it
DAEMONS = ("zebra", "bgpd", "bfdd")
FRR_USER = "frr"


def pathspace(paths: LabPaths, name: str) -> str:
    """The vtysh ``-N`` name of a lab node's (or router's) FRR."""
    return f"{paths.lab}_{name}"


def frr_dir(paths: LabPaths, name: str) -> Path:
    return paths.run_dir / "frr" / name


def link_path(paths: LabPaths, name: str) -> Path:
    return FRR_RUN / pathspace(paths, name)


def check_installed() -> None:
    missing = [d for d in DAEMONS if not (FRR_BIN / d).exists()]
    if missing or shutil.which("vtysh") is None:
        raise LabError(f"routingMode: native needs FRR ({', '.join(missing) or 'vtysh'} not found under {FRR_BIN}); "
                       "install the Debian package frr (contrib/install-deps.sh)")


def _owner() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(FRR_USER)
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        raise LabError(f"user {FRR_USER!r} does not exist (the frr package creates it)") from None


def start(paths: LabPaths, name: str, netns_name: str, configs: dict[str, str], timeout: float = 15.0) -> dict[str, int]:
    """Start zebra, then bgpd and bfdd, in ``netns_name``; return their pids once their vty sockets exist.

    ``configs`` maps daemon to extra startup config text (after ``frr defaults`` and hostname).
    """
    check_installed()
    d = frr_dir(paths, name)
    d.mkdir(parents=True, exist_ok=True)
    uid, gid = _owner()
    os.chown(d, uid, gid)
    # Only root and FRR reach the sockets in it (bfdd binds its control socket 0777, below).
    os.chmod(d, 0o750)
    link = link_path(paths, name)
    FRR_RUN.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise LabError(f"{link} exists and is not the lab's symlink; remove it or choose another lab name")
        link.unlink()
    link.symlink_to(d)
    for daemon in DAEMONS:
        conf = d / f"{daemon}.conf"
        conf.write_text(f"frr defaults datacenter\nhostname {name}\n{configs.get(daemon, '')}")
        os.chown(conf, uid, gid)
    pids = {}
    for daemon in DAEMONS:
        pids[daemon] = start_daemon(paths, name, netns_name, daemon)
        sock = d / ("zserv.api" if daemon == "zebra" else f"{daemon}.vty")
        _wait_path(sock, pids[daemon], d / f"{daemon}.log", timeout)
        if daemon == "zebra":
            _wait_path(d / "zebra.vty", pids[daemon], d / "zebra.log", timeout)
        _tighten(d, daemon, pids[daemon], timeout)
    return pids


def _tighten(d: Path, daemon: str, pid: int, timeout: float) -> None:
    """bfdd binds its control socket (``bfdd.sock``, which nothing of NovaNet uses) with umask 0,
    so mode 0777 whatever umask it inherits: make it owner and group only, like FRR's vty
    sockets. The directory (0750) keeps other users out in the moment between bind and chmod."""
    if daemon != "bfdd":
        return
    sock = d / "bfdd.sock"
    _wait_path(sock, pid, d / "bfdd.log", timeout)
    os.chmod(sock, 0o660)


def start_daemon(paths: LabPaths, name: str, netns_name: str, daemon: str) -> int:
    d = frr_dir(paths, name)
    if daemon == "bfdd":  # a dead bfdd's socket: _tighten must wait for the new one, not chmod this
        (d / "bfdd.sock").unlink(missing_ok=True)
    # Foreground (no -d): the pid nsenter exec's into is the daemon's, and the lab owns it.
    argv = [str(FRR_BIN / daemon), "-N", pathspace(paths, name), "-f", str(d / f"{daemon}.conf"),
            "-i", str(d / f"{daemon}.pid"), "--log", f"file:{d / (daemon + '.log')}", "-u", FRR_USER, "-g", FRR_USER]
    return procs.start_in_netns(argv, netns_name, d / f"{daemon}.out", d / f"{daemon}.lab-pid")


def daemon_pid(paths: LabPaths, name: str, daemon: str) -> int | None:
    return procs.owned_pid(frr_dir(paths, name) / f"{daemon}.lab-pid", (f"-N {pathspace(paths, name)} ",))


def restart_daemon(paths: LabPaths, name: str, netns_name: str, daemon: str, hard: bool = False,
                   timeout: float = 15.0) -> int:
    """Stop one FRR daemon (SIGTERM, or SIGKILL with ``hard``) and start it again, as watchfrr would."""
    old = daemon_pid(paths, name, daemon)
    if old is not None:
        os.kill(old, signal.SIGKILL if hard else signal.SIGTERM)
        deadline = time.monotonic() + 10
        while procs.is_running(old) and time.monotonic() < deadline:
            procs.reap()
            time.sleep(0.02)
    d = frr_dir(paths, name)
    sock = d / ("zserv.api" if daemon == "zebra" else f"{daemon}.vty")
    sock.unlink(missing_ok=True)
    pid = start_daemon(paths, name, netns_name, daemon)
    _wait_path(sock, pid, d / f"{daemon}.log", timeout)
    _tighten(d, daemon, pid, timeout)
    return pid


def _wait_path(path: Path, pid: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not procs.is_running(pid):
            procs.reap()
            raise LabError(f"FRR {log.stem} exited before creating {path}; last lines of {log}:\n{procs.log_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"FRR {log.stem} did not create {path} within {timeout:.0f} s; log {log}:\n{procs.log_tail(log)}")
        time.sleep(0.02)


def cleanup(paths: LabPaths) -> list[str]:
    """Remove the lab's pathspace symlinks under /run/frr (found by name: works after a crash)."""
    removed = []
    try:
        entries = os.listdir(FRR_RUN)
    except FileNotFoundError:
        return removed
    for e in entries:
        p = FRR_RUN / e
        if e.startswith(f"{paths.lab}_") and p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


def bgp_routes(netns_name: str) -> set[str]:
    """The ``proto bgp`` IPv4 prefixes in a netns's main table."""
    from novanet_core.protocols import RTPROT_BGP

    return podroutes.kernel_routes(netns_name, RTPROT_BGP)


def wait_converged(nodes: dict[str, tuple[str, list[str]]], timeout: float) -> None:
    """Wait until every node has a ``proto bgp`` route to every other node's PodCIDRs
    (``nodes``: name -> (netns, its PodCIDRs, one per family))."""
    from novanet_core.protocols import RTPROT_BGP

    podroutes.wait_routed(nodes, timeout, RTPROT_BGP, "BGP", "`vtysh -N <lab>_<node> -c 'show bgp summary'` and "
                          "the agents' `novanetctl routing status`")
