"""Compile and load the datapath programs with BCC (maps come from the generated prelude)."""

from __future__ import annotations

import importlib.resources
import os
import threading
from dataclasses import dataclass
from typing import Any

from novanet_core.bpf import pinned, syscall
from novanet_ebpf_policy.layouts import MAPS, RINGBUF_MACRO, c_header

FROM_POD = "nv_from_pod"  # tcx ingress of the host veth: packets leaving the pod
TO_POD = "nv_to_pod"  # tcx egress of the host veth: packets the kernel delivers to the pod
PROGRAMS = (FROM_POD, TO_POD)

# BCC's compile is not thread-safe (global LLVM state) and takes the GIL for ~0.3-7 s.
_compile_lock = threading.Lock()


class CompileError(RuntimeError):
    pass


def pin_paths(root: str) -> dict[str, str]:
    return {name: pinned.versioned_path(root, m.spec) for name, m in MAPS.items()}


def source(root: str, cflags: dict[str, str] | None = None) -> str:
    text = importlib.resources.files("novanet_ebpf_policy").joinpath("bpf/datapath.c").read_text()
    prelude = RINGBUF_MACRO + c_header(pin_paths(root))
    for k, v in (cflags or {}).items():
        prelude = f"#define {k} {v}\n" + prelude
    return text.replace("\nNV_GENERATED\n", "\n" + prelude + "\n", 1)


@dataclass
class LoadedProgram:
    bpf: Any  # bcc.BPF
    fds: dict[str, int]  # program name -> fd
    ids: dict[str, int]
    tags: dict[str, str]

    def close(self) -> None:
        """Release this process's references; programs held by links keep running."""
        try:
            self.bpf.cleanup()
        except Exception:  # BCC cleanup on a half-built object must not mask the real error
            pass


def compile_and_load(root: str, cflags: dict[str, str] | None = None) -> LoadedProgram:
    from bcc import BPF  # imported late: BCC reads BCC_KERNEL_SOURCE at compile time

    src = source(root, cflags)
    with _compile_lock:
        try:
            b = BPF(text=src.encode())
            fns = {name: b.load_func(name.encode(), BPF.SCHED_CLS) for name in PROGRAMS}
        except Exception as e:
            raise CompileError(f"datapath program failed to compile/load: {e}") from e
    fds = {n: f.fd for n, f in fns.items()}
    infos = {n: syscall.prog_info(fd) for n, fd in fds.items()}
    return LoadedProgram(b, fds, {n: i.id for n, i in infos.items()}, {n: i.tag for n, i in infos.items()})


def ensure_dirs(root: str) -> None:
    os.makedirs(pinned.map_dir(root), exist_ok=True)
    os.makedirs(os.path.join(root, "links"), exist_ok=True)
