"""Compiling and loading BPF programs: the one place NovaNet calls BCC.

Every plugin that ships a BPF C program builds its source with :func:`render_source` and gets
program fds from :func:`compile_and_load`. Keeping BCC behind this one function is what lets the
compile move out of the long-lived daemons later (a short-lived helper process that compiles,
loads and pins, the daemon then opening the pins with plain bpf(2) calls): callers only ever see
fds and pins, never the BCC object.

BCC's compile is not thread-safe (LLVM keeps global state) and holds the GIL for 0.3-7 s, so
all compiles of a process take :data:`COMPILE_LOCK`, whichever plugin asks.
"""

from __future__ import annotations

import importlib.resources
import os
import threading
from collections.abc import Iterable

from novanet_core.bpf import ktree, syscall
from novanet_core.bpf.pinned import LoadedPrograms

COMPILE_LOCK = threading.Lock()
GENERATED_MARK = "\nNV_GENERATED\n"  # the line of a plugin's C source the generated prelude replaces


class ProgramLoadError(RuntimeError):
    """The source did not compile, or the verifier refused a program (the message says which)."""


def render_source(package: str, path: str, prelude: str) -> str:
    """The C source shipped in ``package`` at ``path`` with its ``NV_GENERATED`` line replaced by
    ``prelude`` (structs, map declarations and constants generated from the Python layouts)."""
    text = importlib.resources.files(package).joinpath(path).read_text()
    if GENERATED_MARK not in text:
        raise ProgramLoadError(f"{package}/{path}: no NV_GENERATED line to put the generated prelude on")
    return text.replace(GENERATED_MARK, "\n" + prelude + "\n", 1)


def compile_and_load(source: str, functions: Iterable[str], header_tree: str, what: str,
                     pin_dir: str | None = None) -> LoadedPrograms:
    """Compile ``source`` against ``header_tree`` and load each of ``functions`` as a tc
    classifier (BPF_PROG_TYPE_SCHED_CLS). With ``pin_dir``, each program is also pinned there
    under its function name, replacing an older pin (the pins are what outlive this process).

    ``what`` names the programs in the error (``"vxlan programs"``)."""
    from bcc import BPF  # late: a venv without BCC must still import every plugin

    names = list(functions)
    with COMPILE_LOCK:
        ktree.activate(header_tree)  # BCC reads BCC_KERNEL_SOURCE when it compiles
        b = None
        try:
            b = BPF(text=source.encode())
            fds = {n: b.load_func(n.encode(), BPF.SCHED_CLS).fd for n in names}
        except Exception as e:
            if b is not None:
                LoadedPrograms(b, {}).close()
            raise ProgramLoadError(f"{what} failed to compile/load: {e}") from e
    loaded = LoadedPrograms(b, fds)
    if pin_dir is not None:
        for name, fd in fds.items():
            pin_program(fd, os.path.join(pin_dir, name))
    return loaded


def pin_program(fd: int, path: str) -> None:
    """Pin ``fd`` at ``path``; a pin already there (an older version of the program) is replaced."""
    if os.path.lexists(path):
        os.unlink(path)
    syscall.obj_pin(fd, path)
