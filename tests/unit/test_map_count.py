"""Counting a map's entries in batches (what dp.status and the metrics report) gives what the
one-key-at-a-time walk gives, across batch boundaries, for every map type the datapath counts."""

from __future__ import annotations

import os
import struct

import pytest

from novanet_core.bpf import syscall


def _map(kind: str, n: int, key_size: int = 8, value_size: int = 16, flags: int = 0) -> int:
    fd = syscall.map_create(syscall.MAP_TYPES[kind], key_size, value_size, 20000, flags, "nv_t_count")
    for i in range(n):
        key = struct.pack("=II", 32, i) if kind == "lpm_trie" else struct.pack("=Q", i * 7919)
        syscall.map_update(fd, key, bytes(value_size))
    return fd


@pytest.mark.root
@pytest.mark.parametrize("kind", ["hash", "lru_hash"])
def test_batch_count_equals_the_key_walk(kind: str) -> None:
    for n in (0, 1, 4095, 4096, 10001):
        fd = _map(kind, n)
        try:
            walked = sum(1 for _ in syscall.map_keys(fd, 8))
            assert walked == n
            assert syscall.map_count(fd, 8, 16) == n
            assert syscall.map_count(fd, 8, 16, chunk=7) == n  # many small batches
        finally:
            os.close(fd)


@pytest.mark.root
def test_a_map_without_the_batch_command_is_walked() -> None:
    fd = _map("lpm_trie", 25, flags=1)  # BPF_F_NO_PREALLOC, required by LPM tries
    try:
        assert syscall.map_count(fd, 8, 16) == 25
    finally:
        os.close(fd)
