"""Build the datapath source and load its programs (maps come from the generated prelude)."""

from __future__ import annotations

import importlib.resources
import os

from novanet_core.bpf import compiler, pinned
from novanet_ebpf_policy.layouts import MAPS, RINGBUF_MACRO, c_header

FROM_POD = "nv_from_pod"  # tcx ingress of the host veth: packets leaving the pod
TO_POD = "nv_to_pod"  # tcx egress of the host veth: packets the kernel delivers to the pod
PROGRAMS = (FROM_POD, TO_POD)

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


# The compile runs in a helper process (novanet_core.bpf.compiler): the dataplane holds program
# fds, never the compiler.
LoadedProgram = compiler.Programs


def compile_and_load(root: str, header_tree: str, cflags: dict[str, str] | None = None) -> LoadedProgram:
    try:
        return compiler.compile_and_load(source(root, cflags), PROGRAMS, header_tree, root, "datapath program")
    except compiler.CompileError as e:
        raise CompileError(str(e)) from e


def ensure_dirs(root: str) -> None:
    os.makedirs(pinned.map_dir(root), exist_ok=True)
    os.makedirs(os.path.join(root, "links"), exist_ok=True)
