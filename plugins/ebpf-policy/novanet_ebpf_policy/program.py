"""The datapath programs: their source (maps come from the generated prelude) and their load,
through the core's compile helper (novanet_core.bpf.programs: the dataplane holds program fds,
never the compiler)."""

from __future__ import annotations

import importlib.resources
import os

from novanet_core.bpf import pinned, programs
from novanet_ebpf_policy.layouts import MAPS, RINGBUF_MACRO, c_header

FROM_POD = "nv_from_pod"  # tcx ingress of the host veth: packets leaving the pod
TO_POD = "nv_to_pod"  # tcx egress of the host veth: packets the kernel delivers to the pod
FROM_UNDERLAY = "nv_from_underlay"  # tcx ingress of the node's underlay interface (NodePort)
# not attached: nv_from_pod tail-calls it (ipv6_progs[0]) for a pod's IPv6 packet (bpf/datapath6.c
# says why it is a program of its own)
FROM_POD6 = "nv_from_pod6_prog"
TC_PROGRAMS = (FROM_POD, TO_POD, FROM_UNDERLAY, FROM_POD6)
# cgroup sock_addr and sock programs (Services at socket level) and their expected attach types
# (enum bpf_attach_type: the program is verified for, and may only attach as, that hook)
SOCK_PROGRAMS = {
    "nv_sock_connect4": 10,  # BPF_CGROUP_INET4_CONNECT
    "nv_sock_sendmsg4": 14,  # BPF_CGROUP_UDP4_SENDMSG
    "nv_sock_recvmsg4": 19,  # BPF_CGROUP_UDP4_RECVMSG
    "nv_sock_getpeername4": 29,  # BPF_CGROUP_INET4_GETPEERNAME
    "nv_sock_connect6": 11,  # BPF_CGROUP_INET6_CONNECT
    "nv_sock_sendmsg6": 15,  # BPF_CGROUP_UDP6_SENDMSG
    "nv_sock_recvmsg6": 20,  # BPF_CGROUP_UDP6_RECVMSG
    "nv_sock_getpeername6": 30,  # BPF_CGROUP_INET6_GETPEERNAME
    # a cgroup/sock program (the attach type says so to the loader): forgets a closing socket's
    # reverse translations
    "nv_sock_release": 34,  # BPF_CGROUP_INET_SOCK_RELEASE
}
PROGRAMS = TC_PROGRAMS + tuple(SOCK_PROGRAMS)
SERVICES_MARK = "\nNV_SERVICES\n"  # the line of datapath.c that bpf/services.c replaces
DATAPATH6_MARK = "\nNV_DATAPATH6\n"  # the line of datapath.c that bpf/datapath6.c (IPv6) replaces
SERVICES6_MARK = "\nNV_SERVICES6\n"  # ... and bpf/services6.c (IPv6 Services per packet)
HOOKS = {FROM_POD: "ingress", TO_POD: "egress", FROM_UNDERLAY: "underlay_ingress", FROM_POD6: "tail_call",
         **{n: "cgroup_" + n.removeprefix("nv_sock_") for n in SOCK_PROGRAMS}}


def pin_paths(root: str) -> dict[str, str]:
    return {name: pinned.versioned_path(root, m.spec) for name, m in MAPS.items()}


def source(root: str, cflags: dict[str, str] | None = None) -> str:
    prelude = RINGBUF_MACRO + c_header(pin_paths(root))
    for k, v in (cflags or {}).items():
        prelude = f"#define {k} {v}\n" + prelude
    text = programs.render_source("novanet_ebpf_policy", "bpf/datapath.c", prelude)
    # the Services and IPv6 sections live in their own files, inserted where datapath.c marks them
    files = importlib.resources.files("novanet_ebpf_policy")
    for mark, name in ((SERVICES_MARK, "bpf/services.c"), (DATAPATH6_MARK, "bpf/datapath6.c"),
                       (SERVICES6_MARK, "bpf/services6.c")):
        text = text.replace(mark, "\n" + files.joinpath(name).read_text() + "\n", 1)
    return text


def compile_and_load(root: str, header_tree: str, cflags: dict[str, str] | None = None) -> programs.Programs:
    return programs.compile_and_load(source(root, cflags), TC_PROGRAMS, header_tree, root, "datapath program",
                                     sock_addr=SOCK_PROGRAMS)


def ensure_dirs(root: str) -> None:
    os.makedirs(pinned.map_dir(root), exist_ok=True)
    os.makedirs(os.path.join(root, "links"), exist_ok=True)
