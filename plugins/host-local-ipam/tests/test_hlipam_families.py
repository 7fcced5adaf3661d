"""The host-local IPAM backend per family: IPv6-only and dual-stack pools keep the IPv4 guarantees
(reservations, idempotency, persistence, locking, rotation, all-or-nothing, GC)."""

from __future__ import annotations

import ipaddress
import multiprocessing as mp
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from novanet_host_local_ipam import HostLocalIpam, Pool
from novanet_host_local_ipam.plugin import create_backend

from novanet_core.backends import BackendContext, ConfigError, IpamError, PoolExhausted
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import Attachment, IpamRequest, NodeInfo

V4, V6 = "10.42.0.0/24", "fd00:42::/64"


def make(tmp_path: Path, *cidrs: str) -> HostLocalIpam:
    return HostLocalIpam([Pool.parse(c) for c in cidrs], str(tmp_path / "ipam"))


def req(cid: str, ifname: str = "eth0", address: str | None = None) -> IpamRequest:
    return IpamRequest(container_id=cid, ifname=ifname, address=address)


def files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "ipam").iterdir() if p.name not in ("lock",)
                  and not p.name.startswith("last_reserved"))


# ---------------------------------------------------------------- IPv6-only


def test_ipv6_pool_reserves_network_and_gateway_only() -> None:
    pool = Pool.parse("fd00:42::/126")
    assert str(pool.gateway) == "fd00:42::1"
    assert (str(pool.first), str(pool.last)) == ("fd00:42::2", "fd00:42::3")  # no broadcast in IPv6
    assert pool.capacity == 2
    assert "network address" in pool.why_not_assignable(ipaddress.IPv6Address("fd00:42::"))
    assert "gateway" in pool.why_not_assignable(ipaddress.IPv6Address("fd00:42::1"))
    assert pool.why_not_assignable(ipaddress.IPv6Address("fd00:42::3")) is None


def test_ipv6_only_allocation_is_one_file_per_address_with_the_pool_gateway(tmp_path: Path) -> None:
    ipam = make(tmp_path, "fd00:42::/126")
    a, b = ipam.allocate(req("c1")), ipam.allocate(req("c2"))
    assert (a.address, a.prefix_len, a.gateway) == ("fd00:42::2", 126, "fd00:42::1")
    assert b.address == "fd00:42::3"
    assert files(tmp_path) == ["fd00:42::2", "fd00:42::3"]
    assert (tmp_path / "ipam" / "fd00:42::2").read_text().splitlines() == ["c1", "eth0"]
    with pytest.raises(PoolExhausted, match="fd00:42::/126 is exhausted: all 2 assignable addresses"):
        ipam.allocate(req("c3"))


def test_ipv6_allocation_rotates_and_persists_across_instances(tmp_path: Path) -> None:
    ipam = make(tmp_path, V6)
    first = ipam.allocate(req("c1")).address
    ipam.release("c1", "eth0")
    again = make(tmp_path, V6)  # a restarted agent
    assert again.allocate(req("c2")).address != first  # the just-released address rests
    assert (tmp_path / "ipam" / "last_reserved_ip.0").read_text() == "fd00:42::3"
    assert {a.container_id for a in again.list()} == {"c2"}


def test_factory_builds_an_ipv6_pool_from_the_node(tmp_path: Path) -> None:
    cfg = NovaNetConfig(clusterCIDR="fd00:42::/48", ipam={"dataDir": str(tmp_path)})
    node = NodeInfo(name="n1", ip="fd00:30::2", pod_cidr="fd00:42:0:7::/64")
    backend = create_backend(BackendContext(config=cfg, component="agent", node=node))
    assert backend.allocate(req("c1")).address == "fd00:42:0:7::2"


# ---------------------------------------------------------------- dual-stack


def test_dual_stack_attachment_gets_one_address_per_family_primary_first(tmp_path: Path) -> None:
    ipam = make(tmp_path, V4, V6)
    a = ipam.allocate(req("c1"))
    assert (a.address, a.gateway, a.prefix_len) == ("10.42.0.2", "10.42.0.1", 24)
    assert [(x.address, x.prefix_len, x.gateway) for x in a.addresses] == [
        ("10.42.0.2", 24, "10.42.0.1"), ("fd00:42::2", 64, "fd00:42::1")]
    assert files(tmp_path) == ["10.42.0.2", "fd00:42::2"]
    # The reference plugin's per-range marker: one per pool, in pool order.
    assert (tmp_path / "ipam" / "last_reserved_ip.0").read_text() == "10.42.0.2"
    assert (tmp_path / "ipam" / "last_reserved_ip.1").read_text() == "fd00:42::2"
    v6_first = make(tmp_path, V6, V4).allocate(req("c2"))  # primary IPv6: its address leads
    assert [x.address for x in v6_first.addresses] == ["fd00:42::3", "10.42.0.3"]


def test_dual_stack_allocate_is_idempotent_and_get_returns_both(tmp_path: Path) -> None:
    ipam = make(tmp_path, V4, V6)
    a = ipam.allocate(req("c1"))
    assert ipam.allocate(req("c1")) == a
    assert ipam.get("c1", "eth0") == a
    assert len(files(tmp_path)) == 2


def test_dual_stack_release_and_gc_free_both_families(tmp_path: Path) -> None:
    ipam = make(tmp_path, V4, V6)
    ipam.allocate(req("c1"))
    ipam.allocate(req("c2"))
    assert sorted(ipam.release("c1", "eth0")) == ["10.42.0.2", "fd00:42::2"]
    released = ipam.gc([])
    assert sorted(a.address for a in released) == ["10.42.0.3", "fd00:42::3"]
    assert files(tmp_path) == []


def test_one_family_exhausted_allocates_neither(tmp_path: Path) -> None:
    ipam = make(tmp_path, "fd00:42::/64", "10.42.0.0/30")  # one IPv4 address in all
    ipam.allocate(req("c1"))
    before = files(tmp_path)
    with pytest.raises(PoolExhausted, match="10.42.0.0/30"):
        ipam.allocate(req("c2"))
    assert files(tmp_path) == before  # its IPv6 address was taken back
    assert ipam.get("c2", "eth0") is None


def test_requested_addresses_per_family(tmp_path: Path) -> None:
    ipam = make(tmp_path, V4, V6)
    a = ipam.allocate(req("c1", address="fd00:42::99,10.42.0.50"))
    assert [x.address for x in a.addresses] == ["10.42.0.50", "fd00:42::99"]
    b = ipam.allocate(req("c2", address="fd00:42::77"))  # IPv4 from the rotation
    assert [x.address for x in b.addresses] == ["10.42.0.51", "fd00:42::77"]
    for bad, why in [("fd00:43::1", "outside pool fd00:42::/64"), ("fd00:42::1", "gateway"),
                     ("fd00:42::5,fd00:42::6", "two IPv6 addresses"), ("fd00:42::99", "already allocated")]:
        with pytest.raises(IpamError, match=f"^address: .*{why}"):
            ipam.allocate(req("c9", address=bad))
    assert ipam.get("c9", "eth0") is None


def test_ipv6_address_on_an_ipv4_only_node_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IpamError, match=r"^address: fd00::5 is IPv6 but this node has no IPv6 pool \(10.42.0.0/24\)"):
        make(tmp_path, V4).allocate(req("c1", address="fd00::5"))


def test_status_lists_every_pool_and_reports_the_fullest(tmp_path: Path) -> None:
    ipam = make(tmp_path, "10.42.0.0/29", V6)
    for i in range(3):
        ipam.allocate(req(f"c{i}"))
    st = ipam.status()
    assert [(p["cidr"], p["allocated"], p["free"]) for p in st["pools"]] == [
        ("10.42.0.0/29", 3, 2), ("fd00:42::/64", 3, 2**64 - 2 - 3)]
    assert (st["pool"], st["capacity"], st["allocated"], st["free"]) == ("10.42.0.0/29", 5, 3, 2)


def test_two_pools_of_one_family_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^podCIDR: .*one pool per IP family"):
        Pool.parse_all(["fd00:42::/64", "fd00:43::/64"], "podCIDR")


@pytest.mark.parametrize("cidrs", [(V6,), (V4, V6)], ids=["ipv6", "dual"])
def test_threads_allocating_at_once_get_distinct_addresses_in_every_family(tmp_path: Path, cidrs: tuple) -> None:
    n = 50
    d = str(tmp_path / "ipam")
    start = threading.Barrier(n)

    def one(i: int) -> list[str]:
        ipam = HostLocalIpam([Pool.parse(c) for c in cidrs], d)
        start.wait(timeout=60)
        return [a.address for a in ipam.allocate(req(f"t{i}")).addresses]

    with ThreadPoolExecutor(max_workers=n) as pool:
        got = list(pool.map(one, range(n)))
    for fam in range(len(cidrs)):
        assert len({g[fam] for g in got}) == n
    assert len(files(tmp_path)) == n * len(cidrs)


def _child(data_dir: str, i: int, start: threading.Barrier, out: mp.Queue) -> None:
    try:
        ipam = HostLocalIpam([Pool.parse(V4), Pool.parse(V6)], data_dir)
        start.wait(timeout=60)
        out.put((i, [a.address for a in ipam.allocate(req(f"p{i}")).addresses]))
    except BaseException as e:  # reported to the parent, which fails the test with it
        out.put((i, [f"error: {e!r}"]))


def test_processes_allocating_dual_stack_at_once_get_distinct_pairs(tmp_path: Path) -> None:
    n = 30
    d = str(tmp_path / "ipam")
    make(tmp_path, V4, V6)
    ctx = mp.get_context("fork")
    start = ctx.Barrier(n)
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(d, i, start, out)) for i in range(n)]
    try:
        for p in procs:
            p.start()
        got = dict(out.get(timeout=120) for _ in range(n))
        for p in procs:
            p.join(timeout=60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert not [v for v in got.values() if v[0].startswith("error")]
    assert len({v[0] for v in got.values()}) == n and len({v[1] for v in got.values()}) == n
    listed = make(tmp_path, V4, V6).list()
    assert len(listed) == 2 * n and {a.container_id for a in listed} == {f"p{i}" for i in range(n)}


def test_gc_keeps_valid_dual_stack_attachments(tmp_path: Path) -> None:
    ipam = make(tmp_path, V4, V6)
    keep = ipam.allocate(req("keep"))
    ipam.allocate(req("gone"))
    ipam.gc([Attachment("keep", "eth0")])
    assert ipam.get("keep", "eth0") == keep
    assert files(tmp_path) == sorted(x.address for x in keep.addresses)
