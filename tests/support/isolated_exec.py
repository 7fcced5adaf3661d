"""Run a program in a mount namespace whose root holds only the given bind mounts.

    python isolated_exec.py [--netns PATH] [--bind SRC:DST]... [--list] -- PROGRAM [ARGS...]

A fresh tmpfs becomes the root (pivot_root, the old root detached), so nothing of this machine's
filesystem exists for PROGRAM but what is bound in: no /usr, no interpreter, no venv, no
/opt/novanet. That is how a node's runtime executes a CNI binary that must depend on nothing of
the image that installed it. ``--list`` prints every path of the new root instead of running
anything (the tests' proof of what the namespace holds). The environment is passed unchanged.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155  # x86_64

libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        sys.stderr.write(f"isolated_exec: {what}: {os.strerror(e)}\n")
        sys.exit(127)


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [s.encode() if s is not None else None for s in (src, dst, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {src} {dst}")


def main(argv: list[str]) -> None:
    netns, binds, listing = None, [], False
    while argv and argv[0] != "--":
        opt = argv.pop(0)
        if opt == "--netns":
            netns = argv.pop(0)
        elif opt == "--bind":
            src, dst = argv.pop(0).split(":", 1)
            binds.append((src, dst))
        elif opt == "--list":
            listing = True
        else:
            sys.exit(f"isolated_exec: unknown option {opt}")
    program = argv[1:]
    if netns:
        fd = os.open(netns, os.O_RDONLY)
        _check(libc.setns(fd, CLONE_NEWNET), f"setns {netns}")
        os.close(fd)
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The new root is a tmpfs over /mnt of this (private) namespace: nothing is created outside it.
    root = "/mnt"
    if any(src == root or src.startswith(root + "/") for src, _ in binds):
        sys.exit("isolated_exec: bind sources under /mnt would be hidden by the new root")
    _mount("tmpfs", root, "tmpfs", 0, "size=16m,mode=0755")
    for src, dst in binds:
        target = root + dst
        if os.path.isdir(src):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
        _mount(src, target, None, MS_BIND | MS_REC)
    os.makedirs(root + "/.old")
    _check(libc.syscall(SYS_PIVOT_ROOT, root.encode(), (root + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    if listing:
        for d, dirs, files in os.walk("/"):
            for name in dirs + files:
                print(os.path.join(d, name))
        sys.stdout.flush()
        os._exit(0)
    try:
        os.execv(program[0], program)
    except OSError as e:
        sys.stderr.write(f"isolated_exec: exec {program[0]}: {e.strerror}\n")
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
