"""A daemonset node's own mount namespace, held by one process (``python -m novanet_lab.daemonset.mounts``).

The DaemonSet pod's hostPath volumes (``/run/novanet``, ``/run/netns``, ``/var/lib/cni``,
``/sys/fs/bpf``, ``/var/lib/novanet``, ``/var/cache/novanet``, ``/opt/cni/bin``, ``/etc/cni/net.d``, ``/run/xtables.lock``)
and podman's own state must be the node's, not the machine's. So the node's podman runs in a mount
namespace of its own (``unshare --mount --propagation private``: nothing mounted in it is seen
outside), in which this process mounts, from a plan the lab writes:

- a tmpfs, or a bind of a directory the lab owns, on each target;
- where a target does not exist on the machine (``/opt/cni`` here), its nearest existing parent
  is covered by a tmpfs into which every entry of the original is bound back ("shadowed"), so the
  mount point is made in the tmpfs and nothing is created on the machine's filesystems;
- bind sources are first bound onto staging directories of the lab (a tmpfs over ``/run`` would
  hide a source under ``/run``), and shadowed parents are bound there too before they are covered;
- targets marked shared get their own peer group (``/run/netns`` for the agent's HostToContainer
  view of pod netns bound later, ``/sys/fs/bpf`` for the dataplane's Bidirectional mount).

Then it writes the ready file and waits for SIGTERM; the namespace lives as long as some process
is in it. mount(2) through ctypes: Python has no binding, and one process doing every step keeps
the order (and the error, which goes to the error file the lab reads) in one place.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        what = f"{fstype or 'bind'} {source or ''} on {target}".replace("  ", " ")
        raise OSError(err, f"mount {what}: {os.strerror(err)}")


class Builder:
    """Carries out a plan: ``{"stage": DIR, "mounts": [{"target", "tmpfs"|"source", "shared"?}]}``."""

    def __init__(self, stage: str) -> None:
        self.stage = Path(stage)
        self.staged = 0
        self.ours: list[Path] = []  # tmpfs mounts made here: a mount point inside one is just mkdir'ed

    def _stage(self, source: str) -> str:
        d = self.stage / str(self.staged)
        self.staged += 1
        d.mkdir(parents=True, exist_ok=True)
        _mount(source, str(d), None, MS_BIND | MS_REC)
        return str(d)

    def _inside_ours(self, path: Path) -> bool:
        return any(path == t or t in path.parents for t in self.ours)

    def _shadow(self, parent: Path) -> None:
        """Cover ``parent`` with a tmpfs holding the same entries, each bound back from a staged copy."""
        if parent == Path("/"):
            raise OSError(0, "cannot shadow / (a target's only existing parent is the root)")
        st = os.stat(parent)
        staged = Path(self._stage(str(parent)))
        _mount("novanet-lab-shadow", str(parent), "tmpfs", 0,
               f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid}")
        self.ours.append(parent)
        for entry in os.scandir(staged):
            dst = parent / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), dst)
                continue
            if entry.is_dir(follow_symlinks=False):
                dst.mkdir()
            else:
                dst.touch()
            _mount(entry.path, str(dst), None, MS_BIND | MS_REC)

    def _mountpoint(self, target: Path, is_dir: bool) -> None:
        if target.exists():
            return
        anc = target.parent
        while not anc.exists():
            anc = anc.parent
        if not self._inside_ours(anc):
            self._shadow(anc)
        if is_dir:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()

    def run(self, mounts: list[dict[str, Any]]) -> None:
        staged = {i: self._stage(m["source"]) for i, m in enumerate(mounts) if "source" in m}
        for i, m in enumerate(mounts):
            target = Path(m["target"])
            self._mountpoint(target, True)
            if "source" in m:
                _mount(staged[i], str(target), None, MS_BIND | MS_REC)
            else:
                _mount("novanet-lab-node", str(target), "tmpfs", 0, m["tmpfs"] or "mode=755")
                self.ours.append(target)
            if m.get("shared"):
                _mount(None, str(target), None, MS_SHARED)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", required=True)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--error", required=True)
    args = ap.parse_args(argv)
    try:
        plan = json.loads(Path(args.plan).read_text())
        Builder(plan["stage"]).run(plan["mounts"])
    except (OSError, ValueError, KeyError) as e:
        Path(args.error).write_text(f"{e}\n")
        return 1
    Path(args.ready).write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
