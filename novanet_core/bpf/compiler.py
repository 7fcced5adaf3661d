"""Compiling BPF C in a short-lived helper process, so that no daemon maps the compiler.

BCC links LLVM and clang: a process that has compiled once keeps ~85 MiB of their libraries and
~30 MiB of heap resident for its whole life (measured: the agent 168 MiB RSS, of which
libLLVM 55 MiB and libclang-cpp 28 MiB). The daemons only need program fds, so
:func:`compile_and_load` runs the compile in ``python -m novanet_core.bpf.compiler``, which loads
the programs, pins them in a private directory on bpffs and exits; the caller opens the pins with
plain bpf(2) calls (:mod:`.syscall`) and removes them. Maps are unaffected: every map a NovaNet
program uses is pinned by its declaration, so the helper creates or reuses the same pins the
daemon then opens, and each program holds its maps while it lives.

The cost is one interpreter start and ``import bcc`` per compile (~0.2-0.4 s on top of the
compile itself), paid at daemon start and on a program swap, never per pod or per packet. A source
compiled before, on this node or for another root, is not compiled again: :mod:`.objcache` loads
what the helper recorded then, in this process, with plain bpf(2) calls.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from novanet_core.bpf import bpffs, ktree, objcache, syscall

log = logging.getLogger(__name__)

HELPER_DIR = "compile"  # under the caller's bpffs root: <root>/compile/<pid>_<random>/<function>
_TIMEOUT = 300.0  # a compile takes 0.3-7 s here; far beyond that something is wedged


class CompileError(RuntimeError):
    """The source did not compile, or the verifier refused a program (the message says which)."""


@dataclass
class Programs:
    """Program fds this process owns (pins, links and program arrays keep programs alive after
    :meth:`close`)."""

    fds: dict[str, int]
    ids: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, fd in self.fds.items():
            info = syscall.prog_info(fd)
            self.ids[name], self.tags[name] = info.id, info.tag

    def close(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = {}


# enum bpf_attach_type values whose programs are BPF_PROG_TYPE_CGROUP_SOCK (context struct
# bpf_sock), not CGROUP_SOCK_ADDR: INET_SOCK_CREATE, INET4/6_POST_BIND, INET_SOCK_RELEASE
CGROUP_SOCK_ATTACH = frozenset({2, 8, 9, 34})


def _remove_stale(base: str) -> None:
    """Private directories of helpers whose daemon died mid-compile (kill -9)."""
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        pid = name.split("_", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            bpffs.remove_tree(os.path.join(base, name))


def compile_and_load(source: str, functions: Iterable[str], header_tree: str, bpf_root: str,
                     what: str, sock_addr: Mapping[str, int] | None = None) -> Programs:
    """Compile ``source`` against ``header_tree`` in a helper process and load each of
    ``functions`` as a tc classifier, and each of ``sock_addr`` (function -> expected attach type,
    e.g. 10 BPF_CGROUP_INET4_CONNECT) as a cgroup sock_addr program for that hook (a cgroup sock
    program for the attach types of :data:`CGROUP_SOCK_ATTACH`); returns this
    process's fds of the loaded programs. ``bpf_root`` is a directory on bpffs the helper may pin
    into; ``what`` names the programs in the error ("vxlan programs")."""
    sock = dict(sock_addr or {})
    names = list(functions) + list(sock)
    # The key names the header tree by the stamp its build writes: build it before the key, or a
    # node's first start records its programs under a key that no later start computes.
    try:
        ktree.ensure(header_tree)
    except ktree.HeaderTreeError as e:
        raise CompileError(f"{what}: {e}") from None
    cache_key = objcache.key(source, names, sock, header_tree, bpf_root)
    cached = objcache.load(cache_key, bpf_root)
    if cached is not None:
        log.info("%s: loaded from the compiled-program cache", what)
        return Programs(cached)
    base = os.path.join(bpf_root, HELPER_DIR)
    bpffs.ensure_dir(base)
    _remove_stale(base)
    pin_dir = os.path.join(base, f"{os.getpid()}_{secrets.token_hex(4)}")
    req = {"source": source, "functions": [n for n in names if n not in sock], "sock_addr": sock,
           "header_tree": header_tree, "pin_dir": pin_dir, "cache_key": cache_key, "bpf_root": bpf_root}
    try:
        try:
            p = subprocess.run([sys.executable, "-m", "novanet_core.bpf.compiler"], input=json.dumps(req),
                               capture_output=True, text=True, timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise CompileError(f"{what}: the compiler did not finish within {_TIMEOUT:.0f} s") from None
        if p.returncode != 0:
            # clang's diagnostics come on stderr; the last lines name the failing construct
            detail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-25:])
            raise CompileError(f"{what} failed to compile/load: {detail}")
        fds: dict[str, int] = {}
        try:
            for n in names:
                fds[n] = syscall.obj_get(os.path.join(pin_dir, n))
        except OSError as e:
            for fd in fds.values():
                os.close(fd)
            raise CompileError(f"{what}: the compiler's pins are missing: {e}") from None
        log.info("%s: compiled and loaded", what)
        return Programs(fds)
    finally:
        if os.path.lexists(pin_dir):
            bpffs.remove_tree(pin_dir)


def _helper() -> int:
    """The helper process: compile, load, pin, exit (its fds, and BCC's, die with it)."""
    req = json.loads(sys.stdin.read())

    ktree.activate(req["header_tree"])  # BCC reads BCC_KERNEL_SOURCE when it compiles
    from bcc import BPF

    try:
        b = BPF(text=req["source"].encode())
        fns = {n: b.load_func(n.encode(), BPF.SCHED_CLS) for n in req["functions"]}
        fns.update({n: b.load_func(n.encode(), BPF.CGROUP_SOCK if at in CGROUP_SOCK_ATTACH else BPF.CGROUP_SOCK_ADDR,
                                   attach_type=at)
                    for n, at in req.get("sock_addr", {}).items()})
    except Exception as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    os.makedirs(req["pin_dir"], exist_ok=True)
    for n, fn in fns.items():
        syscall.obj_pin(fn.fd, os.path.join(req["pin_dir"], n))
    if req.get("cache_key"):
        _record(b, fns, req)
    return 0


def _record(b: object, fns: dict[str, object], req: dict) -> None:
    """The compile's instructions for the cache (:mod:`.objcache`)."""
    from bcc import lib

    module = b.module  # type: ignore[attr-defined]
    sock = req.get("sock_addr", {})
    progs = {}
    for n, fn in fns.items():
        info = syscall.prog_info(fn.fd)  # type: ignore[attr-defined]
        progs[n] = (b.dump_func(n.encode()), info.type, sock.get(n, 0), info.name)  # type: ignore[attr-defined]
    objcache.record(req["cache_key"], req["source"], req["bpf_root"], progs,
                    lib.bpf_module_license(module).decode(), int(lib.bpf_module_kern_version(module)))


if __name__ == "__main__":
    sys.exit(_helper())
