"""The datapath programs: their source (maps come from the generated prelude) and their load,
through the core's compile helper (novanet_core.bpf.programs: the dataplane holds program fds,
never the compiler)."""

from __future__ import annotations

import os

from novanet_core.bpf import pinned, programs
from novanet_ebpf_policy.layouts import MAPS, RINGBUF_MACRO, c_header

FROM_POD = "nv_from_pod"  # tcx ingress of the host veth: packets leaving the pod
TO_POD = "nv_to_pod"  # tcx egress of the host veth: packets the kernel delivers to the pod
PROGRAMS = (FROM_POD, TO_POD)


def pin_paths(root: str) -> dict[str, str]:
    return {name: pinned.versioned_path(root, m.spec) for name, m in MAPS.items()}


def source(root: str, cflags: dict[str, str] | None = None) -> str:
    prelude = RINGBUF_MACRO + c_header(pin_paths(root))
    for k, v in (cflags or {}).items():
        prelude = f"#define {k} {v}\n" + prelude
    return programs.render_source("novanet_ebpf_policy", "bpf/datapath.c", prelude)


def compile_and_load(root: str, header_tree: str, cflags: dict[str, str] | None = None) -> programs.Programs:
    return programs.compile_and_load(source(root, cflags), PROGRAMS, header_tree, root, "datapath program")


def ensure_dirs(root: str) -> None:
    os.makedirs(pinned.map_dir(root), exist_ok=True)
    os.makedirs(os.path.join(root, "links"), exist_ok=True)
