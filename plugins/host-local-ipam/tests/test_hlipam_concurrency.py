"""Concurrent allocation from threads and from separate processes over one state dir."""

from __future__ import annotations

import fcntl
import ipaddress
import multiprocessing as mp
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from novanet_host_local_ipam import HostLocalIpam, Pool
from novanet_host_local_ipam.store import LOCK_FILE

from novanet_core.types import IpamRequest

CIDR = "10.42.0.0/24"
N = 100


def _ip_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit())


def _check_distinct_and_recorded(d: Path, results: dict[str, str]) -> None:
    """Every caller got its own in-pool address and the dir holds exactly those, each with its owner."""
    assert len(results) == N
    assert len(set(results.values())) == N, "two callers got the same address"
    pool = Pool.parse(CIDR)
    assert all(pool.assignable(ipaddress.IPv4Address(a)) for a in results.values())
    assert sorted(_ip_files(d)) == sorted(results.values())
    for cid, addr in results.items():
        assert (d / addr).read_text().splitlines() == [cid, "eth0"]
    listed = HostLocalIpam(pool, str(d)).list()
    assert {a.container_id: a.address for a in listed} == results


def test_hundred_threads_allocating_at_once_get_hundred_distinct_addresses(tmp_path: Path) -> None:
    d = tmp_path / "ipam"
    shared = HostLocalIpam(Pool.parse(CIDR), str(d))
    start = threading.Barrier(N)

    def one(i: int) -> tuple[str, str]:
        # Half share one instance, half bring their own: both must be safe.
        ipam = shared if i % 2 else HostLocalIpam(Pool.parse(CIDR), str(d))
        start.wait(timeout=60)
        return f"thread-{i}", ipam.allocate(IpamRequest(f"thread-{i}", "eth0")).address

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = dict(pool.map(one, range(N)))
    _check_distinct_and_recorded(d, results)


def _allocate_in_child(data_dir: str, i: int, start: threading.Barrier, out: mp.Queue) -> None:
    try:
        ipam = HostLocalIpam(Pool.parse(CIDR), data_dir)
        start.wait(timeout=60)
        out.put((i, ipam.allocate(IpamRequest(f"proc-{i}", "eth0")).address))
    except BaseException as e:  # reported to the parent, which fails the test with it
        out.put((i, f"error: {e!r}"))


def test_hundred_processes_allocating_at_once_get_hundred_distinct_addresses(tmp_path: Path) -> None:
    d = tmp_path / "ipam"
    HostLocalIpam(Pool.parse(CIDR), str(d))  # create the dir once, as the agent would
    ctx = mp.get_context("fork")  # fork: 100 interpreters without 100 fresh imports
    start = ctx.Barrier(N)
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate_in_child, args=(str(d), i, start, out)) for i in range(N)]
    try:
        for p in procs:
            p.start()
        got: dict[int, str] = {}
        for _ in range(N):
            i, addr = out.get(timeout=120)
            got[i] = addr
        for p in procs:
            p.join(timeout=60)
        assert all(p.exitcode == 0 for p in procs)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    errors = [a for a in got.values() if a.startswith("error")]
    assert not errors, errors[:3]
    assert len({p.pid for p in procs}) == N
    _check_distinct_and_recorded(d, {f"proc-{i}": a for i, a in got.items()})


def test_concurrent_allocations_for_one_attachment_create_exactly_one_address(tmp_path: Path) -> None:
    d = tmp_path / "ipam"
    start = threading.Barrier(20)

    def one(_: int) -> str:
        ipam = HostLocalIpam(Pool.parse(CIDR), str(d))
        start.wait(timeout=60)
        return ipam.allocate(IpamRequest("same", "eth0")).address

    with ThreadPoolExecutor(max_workers=20) as pool:
        addrs = set(pool.map(one, range(20)))
    assert len(addrs) == 1
    assert _ip_files(d) == sorted(addrs)


def test_allocate_waits_while_another_holder_has_the_dir_lock(tmp_path: Path) -> None:
    d = tmp_path / "ipam"
    ipam = HostLocalIpam(Pool.parse(CIDR), str(d))
    result: queue.Queue = queue.Queue()
    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: result.put(ipam.allocate(IpamRequest("c1", "eth0"))))
        t.start()
        # While we hold the lock nothing may be written. (A broken lock fails this; a working
        # one can never be made to fail by a slow machine.)
        t.join(timeout=0.5)
        assert t.is_alive()
        assert _ip_files(d) == []
    finally:
        os.close(fd)
    t.join(timeout=60)
    assert result.get(timeout=1).address == "10.42.0.2"
