"""A plugin's BPF programs from source to pins: the C source with its generated prelude
(:func:`render_source`), the compile and load (:func:`compile_and_load`, done by the short-lived
helper of :mod:`.compiler`, so no daemon holds the compiler), and the program pins that outlive
the loading process (:func:`pin_program`). Every plugin that ships BPF C goes through here."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Mapping

from novanet_core.bpf import compiler, syscall
from novanet_core.bpf.compiler import CompileError, Programs

__all__ = ["GENERATED_MARK", "CompileError", "Programs", "compile_and_load", "pin_program", "render_source"]

GENERATED_MARK = "\nNV_GENERATED\n"  # the line of a plugin's C source the generated prelude replaces


def render_source(package: str, path: str, prelude: str) -> str:
    """The C source shipped in ``package`` at ``path`` with its ``NV_GENERATED`` line replaced by
    ``prelude`` (structs, map declarations and constants generated from the Python layouts)."""
    text = importlib.resources.files(package).joinpath(path).read_text()
    if GENERATED_MARK not in text:
        raise CompileError(f"{package}/{path}: no NV_GENERATED line to put the generated prelude on")
    return text.replace(GENERATED_MARK, "\n" + prelude + "\n", 1)


def compile_and_load(source: str, functions: Iterable[str], header_tree: str, bpf_root: str, what: str,
                     pin_dir: str | None = None, sock_addr: Mapping[str, int] | None = None) -> Programs:
    """Compile ``source`` against ``header_tree`` and load each of ``functions`` as a tc classifier,
    and each of ``sock_addr`` (function -> expected attach type, e.g. 10 BPF_CGROUP_INET4_CONNECT)
    as a cgroup sock_addr (or sock: compiler.CGROUP_SOCK_ATTACH) program for that hook; with ``pin_dir``, each program is also pinned
    there under its function name (replacing an older version). ``bpf_root`` is the caller's bpffs
    root, ``what`` names the programs in errors."""
    progs = compiler.compile_and_load(source, functions, header_tree, bpf_root, what, sock_addr=sock_addr)
    if pin_dir is not None:
        try:
            for name, fd in progs.fds.items():
                pin_program(fd, os.path.join(pin_dir, name))
        except OSError:
            progs.close()
            raise
    return progs


def pin_program(fd: int, path: str) -> None:
    """Pin ``fd`` at ``path``; a pin already there (an older version of the program) is replaced."""
    if os.path.lexists(path):
        os.unlink(path)
    syscall.obj_pin(fd, path)
