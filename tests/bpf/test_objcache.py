"""The compiled-program cache: a source compiled for one bpffs root loads for another without a
compile, bound to that root's maps; a damaged entry or a disabled cache falls back to the compile."""

from __future__ import annotations

import ctypes
import glob
import os
import resource
import struct
import uuid
from collections.abc import Iterator

import pytest

from novanet_core.bpf import bpffs, compiler, ktree, objcache, syscall

pytestmark = [pytest.mark.root, pytest.mark.bpf]

SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
BPF_TABLE_PINNED("hash", u32, u64, counts, 16, "@ROOT@/counts");
int count(struct __sk_buff *skb) {
    u32 k = skb->len;
    u64 one = 1, *v = counts.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    else counts.update(&k, &one);
    return TC_ACT_OK;
}
"""
BPF_PROG_TEST_RUN = 10


def _run(prog_fd: int, size: int) -> int:
    """Run the classifier once on a ``size``-byte frame (BPF_PROG_TEST_RUN); its return value."""
    data = ctypes.create_string_buffer(b"\xff" * 12 + b"\x08\x00" + bytes(size - 14), size)
    attr = struct.pack("=IIIIQQII", prog_fd, 0, size, 0, ctypes.addressof(data), 0, 1, 0)
    buf = ctypes.create_string_buffer(attr + bytes(80 - len(attr)), 80)
    r = syscall._libc.syscall(syscall._NR_BPF, ctypes.c_int(BPF_PROG_TEST_RUN), buf, ctypes.c_uint(80))
    assert r == 0, os.strerror(ctypes.get_errno())
    return struct.unpack_from("=I", buf.raw, 4)[0]


def _count(root: str, size: int) -> int:
    fd = syscall.obj_get(f"{root}/counts")
    try:
        v = syscall.map_lookup(fd, struct.pack("=I", size), 8)
        return struct.unpack("=Q", v)[0] if v else 0
    finally:
        os.close(fd)


@pytest.fixture
def roots(tmp_path, monkeypatch) -> Iterator[tuple[str, str]]:
    monkeypatch.setenv("NOVANET_BPF_CACHE", str(tmp_path / "cache"))
    tag = uuid.uuid4().hex[:8]
    rs = (f"/sys/fs/bpf/tobjc-{tag}-a", f"/sys/fs/bpf/tobjc-{tag}-b")
    for r in rs:
        bpffs.ensure_dir(r)
    try:
        yield rs
    finally:
        for r in rs:
            bpffs.remove_tree(r)


def _load(root: str) -> compiler.Programs:
    tree = ktree.ensure("/var/lib/novanet/ktree")
    return compiler.compile_and_load(SOURCE.replace("@ROOT@", root), ["count"], tree, root, "test program")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_a_source_compiled_for_one_root_loads_for_another_bound_to_its_maps(roots, tmp_path) -> None:
    a, b = roots
    pa = _load(a)
    entries = glob.glob(str(tmp_path / "cache" / "*" / "*.json"))
    assert len(entries) == 1
    before = _children_cpu()
    pb = _load(b)  # same source but for the root: from the cache, no compiler process
    try:
        assert _children_cpu() == before
        assert pb.tags["count"] == pa.tags["count"]  # the kernel's tag ignores map fds
        assert pb.ids["count"] != pa.ids["count"]
        assert _run(pb.fds["count"], 60) == 0 and _run(pb.fds["count"], 60) == 0
        assert _count(b, 60) == 2 and _count(a, 60) == 0  # b's program counts in b's map
        _run(pa.fds["count"], 60)
        assert _count(a, 60) == 1 and _count(b, 60) == 2
    finally:
        pa.close()
        pb.close()


def test_a_damaged_entry_is_compiled_again_and_replaced(roots, tmp_path) -> None:
    a, b = roots
    _load(a).close()
    (entry,) = glob.glob(str(tmp_path / "cache" / "*" / "*.json"))
    with open(entry, "w") as f:
        f.write('{"format": 1, "programs": ')
    before = _children_cpu()
    pb = _load(b)
    try:
        assert _children_cpu() > before  # compiled
        assert _run(pb.fds["count"], 40) == 0 and _count(b, 40) == 1
        assert objcache.load(os.path.basename(entry)[:-5], a) is not None  # rewritten, usable
    finally:
        pb.close()


def test_a_pinned_map_with_other_parameters_is_not_reused_from_the_cache(roots, tmp_path) -> None:
    a, b = roots
    _load(a).close()
    fd = syscall.map_create(1, 4, 8, 32, name="counts")  # 32 entries where the source says 16
    syscall.obj_pin(fd, f"{b}/counts")
    os.close(fd)
    key = os.path.basename(glob.glob(str(tmp_path / "cache" / "*" / "*.json"))[0])[:-5]
    assert objcache.load(key, b) is None


def test_off_disables_it(roots, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NOVANET_BPF_CACHE", "off")
    a, _b = roots
    _load(a).close()
    assert not (tmp_path / "cache").exists()


def test_a_first_start_that_builds_the_header_tree_is_found_by_the_next(roots, tmp_path) -> None:
    """A fresh node has no header tree yet: its first load builds it, and the entry it records must
    be the one the next start (tree present) looks up, not a key made before the tree existed."""
    a, b = roots
    tree = str(tmp_path / "fresh-ktree")
    first = compiler.compile_and_load(SOURCE.replace("@ROOT@", a), ["count"], tree, a, "test program")
    first.close()
    assert os.path.isdir(tree)
    before = _children_cpu()
    again = compiler.compile_and_load(SOURCE.replace("@ROOT@", b), ["count"], tree, b, "test program")
    try:
        assert _children_cpu() == before  # from the cache
        assert len(glob.glob(str(tmp_path / "cache" / "*" / "*.json"))) == 1
    finally:
        again.close()
