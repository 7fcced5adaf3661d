"""Each lab node's cgroup: where its pods' processes run, and where its dataplane attaches the
socket-level Service programs (``bpf.cgroupRoot``).

A real node attaches them at the cgroup v2 root and every process on the node is covered. Lab
nodes share this machine's one cgroup tree, so each gets a subtree of its own::

    <cgroup v2 mount>/novanet-lab/<lab>/<node>/

and the lab starts every process that plays a pod or a host process of that node inside it:
pod servers, ``lab exec``, and the probing threads of ``lab probe``. The subtree is *threaded*
(``novanet-lab`` is its threaded domain): ``lab probe`` opens sockets for pods of several nodes
from one process, one thread per source pod, and a socket belongs to the cgroup of the thread
that created it, so each probing thread moves into its source's node cgroup. A thread may only
move within its process's threaded domain, so while it probes, the probing process sits in
``novanet-lab`` (which has no programs attached) and returns to its own cgroup afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from novanet_core.bpf.cgroups import cgroup2_mount
from novanet_lab.errors import LabError

DOMAIN = "novanet-lab"


def domain() -> Path:
    mnt = cgroup2_mount()
    if mnt is None:
        raise LabError("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")
    return Path(mnt) / DOMAIN


def lab_dir(lab: str) -> Path:
    return domain() / lab


def node_dir(lab: str, node: str) -> Path:
    return lab_dir(lab) / node


def _mkdir(path: Path) -> None:
    # Not Path.mkdir(exist_ok=True): on EEXIST it checks is_dir() again, and another lab's
    # remove() may have taken the domain away in between, which it reports as FileExistsError.
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)


def _threaded(path: Path) -> None:
    _mkdir(path)
    t = path / "cgroup.type"
    if t.read_text().strip() != "threaded":
        t.write_text("threaded")


def create(lab: str, nodes: list[str]) -> None:
    try:
        # Another lab's remove() takes the domain away when it finds it empty, which can happen
        # between our mkdir of the domain and of our lab's directory; once ours exists the domain
        # is not empty and stays.
        for attempt in range(5):
            _mkdir(domain())
            try:
                _threaded(lab_dir(lab))
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        for n in nodes:
            _threaded(node_dir(lab, n))
    except OSError as e:
        raise LabError(f"cannot create the lab's cgroups under {domain()}: {e}") from None


def remove(lab: str) -> list[str]:
    """Move anything still inside to the cgroup v2 root, remove the lab's subtree, and the domain
    when no other lab uses it. Returns the directories removed."""
    top = lab_dir(lab)
    if not top.exists():
        return []
    root = top.parents[1]
    removed = []
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        for name in ("cgroup.threads", "cgroup.procs"):
            try:
                ids = (Path(dirpath) / name).read_text().split()
            except OSError:
                continue
            for i in ids:
                with contextlib.suppress(OSError):  # gone meanwhile
                    (root / "cgroup.procs").write_text(i)
        try:
            os.rmdir(dirpath)
            removed.append(dirpath)
        except OSError:
            pass
    with contextlib.suppress(OSError):
        top.parent.rmdir()  # only when empty
    return removed


def join(path: Path, pid: int = 0) -> None:
    """Put process ``pid`` (0 = this one) into cgroup ``path``."""
    (path / "cgroup.procs").write_text(str(pid or os.getpid()))


def exec_argv(path: Path, argv: list[str]) -> list[str]:
    """``argv`` started inside cgroup ``path``: it joins before it execs, so every socket it
    opens belongs to the cgroup (and the pid stays the program's)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(path), *argv]


# --------------------------------------------------------------------------- probing threads

_lock = threading.Lock()
_users = 0
_home: Path | None = None


def _own_cgroup() -> Path:
    mnt = Path(cgroup2_mount() or "/")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mnt / line[3:].lstrip("/")
    return mnt


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """The process sits in the threaded domain while any thread of it probes (nested and
    concurrent uses share one stay), then goes back where it was."""
    global _users, _home
    with _lock:
        if _users == 0:
            here = _own_cgroup()
            if here != domain():
                _home = here
                join(domain())
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _home is not None:
                with contextlib.suppress(OSError):
                    join(_home)
                _home = None


def enter_thread(path: Path) -> None:
    """Move the calling thread into node cgroup ``path`` (inside :func:`probing`)."""
    (path / "cgroup.threads").write_text(str(threading.get_native_id()))
