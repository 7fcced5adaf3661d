"""GC against valid attachments, and a state dir holding files this backend did not write."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from novanet_host_local_ipam import HostLocalIpam, Pool
from novanet_host_local_ipam.store import LAST_RESERVED_FILE, TMP_PREFIX

from novanet_core.backends import IpamError
from novanet_core.types import Attachment, IpamRequest


def make(d: Path, cidr: str = "10.42.0.0/24") -> HostLocalIpam:
    return HostLocalIpam(Pool.parse(cidr), str(d))


def req(cid: str, ifname: str = "eth0") -> IpamRequest:
    return IpamRequest(container_id=cid, ifname=ifname)


# ---------------------------------------------------------------- GC


def test_gc_releases_attachments_not_in_valid_and_returns_them(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    got = {cid: ipam.allocate(req(cid)) for cid in ("live1", "dead1", "live2", "dead2")}
    released = ipam.gc([Attachment("live1", "eth0"), Attachment("live2", "eth0")])
    assert sorted(released, key=lambda a: a.container_id) == [got["dead1"], got["dead2"]]
    assert ipam.list() == sorted([got["live1"], got["live2"]], key=lambda a: a.address)
    assert not (tmp_path / got["dead1"].address).exists()


def test_gc_matches_container_and_interface_not_container_alone(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    ipam.allocate(req("c1", "eth0"))
    stale = ipam.allocate(req("c1", "net1"))
    assert ipam.gc([Attachment("c1", "eth0")]) == [stale]


def test_gc_with_every_attachment_valid_releases_nothing(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    allocs = [ipam.allocate(req(f"c{i}")) for i in range(5)]
    assert ipam.gc([Attachment(a.container_id, a.ifname) for a in allocs]) == []
    assert ipam.list() == allocs


def test_gc_with_no_valid_attachments_empties_the_pool(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    for i in range(5):
        ipam.allocate(req(f"c{i}"))
    assert len(ipam.gc([])) == 5
    assert ipam.list() == []
    assert ipam.status()["free"] == 253


def test_gc_keeps_out_of_pool_file_of_valid_attachment_and_releases_invalid_one(tmp_path: Path) -> None:
    # PodCIDR changed from 10.42.0.0/24 to 10.42.1.0/24 while pods were still running.
    old = make(tmp_path, "10.42.0.0/24")
    still_running = old.allocate(req("running"))
    old.allocate(req("gone"))
    new = make(tmp_path, "10.42.1.0/24")
    released = new.gc([Attachment("running", "eth0")])
    assert [a.container_id for a in released] == ["gone"]
    assert released[0].gateway == ""  # not an address of the current pool
    assert (tmp_path / still_running.address).exists()
    assert new.gc([]) and not (tmp_path / still_running.address).exists()


def test_gc_releases_empty_state_files_left_by_the_original_implementation(tmp_path: Path) -> None:
    # The original NovaNet wrote empty files and leaked them when pods died during a restart.
    (tmp_path / "10.42.0.9").write_text("")
    ipam = make(tmp_path)
    assert ipam.status()["free"] == 252  # held: someone may still use it
    released = ipam.gc([Attachment("anything", "eth0")])
    assert [(a.address, a.container_id) for a in released] == [("10.42.0.9", "")]
    assert not (tmp_path / "10.42.0.9").exists()


def test_legacy_file_with_only_a_container_id_belongs_to_that_container(tmp_path: Path) -> None:
    (tmp_path / "10.42.0.20").write_text("legacy-cid")
    ipam = make(tmp_path)
    assert ipam.gc([Attachment("legacy-cid", "eth0")]) == []
    assert ipam.allocate(req("legacy-cid")).address == "10.42.0.20"
    assert ipam.release("legacy-cid", "eth0") == ["10.42.0.20"]


def test_gc_does_not_touch_files_whose_name_is_not_an_ip(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("operator notes")
    ipam = make(tmp_path)
    ipam.gc([])
    assert (tmp_path / "README").read_text() == "operator notes"


# ---------------------------------------------------------------- corrupt and foreign files


@pytest.fixture
def messy_dir(tmp_path: Path) -> Path:
    """A state dir with one of every kind of file that is not a clean allocation of the pool."""
    d = tmp_path
    (d / "garbage.txt").write_text("hello")
    (d / "10.42.0.999").write_text("c\neth0")  # not an IP
    (d / "fd00::5").write_text("v6\r\neth0")  # an IPv6 address of a node that has no IPv6 pool now
    (d / "10.42.0.7").write_bytes(b"\x00\xff\xfe\x01")  # binary junk
    (d / "10.42.0.8").write_text("")  # empty
    (d / "10.42.0.9").mkdir()  # a directory named like an IP
    (d / "10.43.0.5").write_text("oldpod\r\neth0")  # outside the pool (earlier PodCIDR)
    (d / "10.42.0.1").write_text("weird\r\neth0")  # the gateway
    (d / LAST_RESERVED_FILE).write_text("bogus")
    (d / f"{TMP_PREFIX}deadbeef").write_text("half-written")  # writer died mid-write
    return d


def test_allocation_over_a_messy_dir_skips_every_occupied_name_and_does_not_crash(messy_dir: Path) -> None:
    ipam = make(messy_dir)
    got = [ipam.allocate(req(f"c{i}")).address for i in range(10)]
    assert got == [f"10.42.0.{n}" for n in (2, 3, 4, 5, 6, 10, 11, 12, 13, 14)]
    assert messy_dir.joinpath("10.42.0.9").is_dir()
    assert not messy_dir.joinpath(f"{TMP_PREFIX}deadbeef").exists()


def test_list_and_get_show_only_clean_allocations_of_the_pool(messy_dir: Path) -> None:
    ipam = make(messy_dir)
    a = ipam.allocate(req("c1"))
    assert ipam.list() == [a]
    assert ipam.get("oldpod", "eth0") is None


def test_status_reports_every_foreign_file_with_a_reason(messy_dir: Path) -> None:
    ipam = make(messy_dir)
    st = ipam.status()
    assert st["ready"] is True
    reasons = {f["file"]: f["reason"] for f in st["foreign"]}
    assert set(reasons) == {"garbage.txt", "10.42.0.999", "fd00::5", "10.42.0.7", "10.42.0.8", "10.42.0.9",
                            "10.43.0.5", "10.42.0.1"}  # fmt: skip
    assert "not an IP" in reasons["garbage.txt"]
    assert reasons["fd00::5"] == "IPv6 address; this node has no IPv6 pool; owner: container v6 interface eth0"
    assert "empty or unreadable" in reasons["10.42.0.7"]
    assert "empty or unreadable" in reasons["10.42.0.8"]
    assert "not a regular file" in reasons["10.42.0.9"]
    assert "outside pool 10.42.0.0/24; owner: container oldpod interface eth0" == reasons["10.43.0.5"]
    assert "gateway" in reasons["10.42.0.1"]
    assert st["allocated"] == 0
    assert st["free"] == 253 - 2  # .7 and .8 held until GC
    assert st["lastReserved"] is None


def test_release_of_an_attachment_also_removes_its_out_of_pool_file(messy_dir: Path) -> None:
    ipam = make(messy_dir)
    assert ipam.release("oldpod", "eth0") == ["10.43.0.5"]


def test_gc_over_a_messy_dir_releases_unowned_and_stray_files_only(messy_dir: Path) -> None:
    ipam = make(messy_dir)
    released = {a.address for a in ipam.gc([Attachment("oldpod", "eth0")])}
    # The IPv6 file is an address of no pool now, like an earlier PodCIDR's: its attachment is gone.
    assert released == {"10.42.0.7", "10.42.0.8", "10.42.0.1", "fd00::5"}
    left = {p.name for p in messy_dir.iterdir()}
    assert {"garbage.txt", "10.42.0.999", "10.42.0.9", "10.43.0.5"} <= left


def test_state_dir_removed_under_a_running_backend_gives_clear_errors_not_tracebacks(tmp_path: Path) -> None:
    d = tmp_path / "ipam"
    ipam = make(d)
    ipam.allocate(req("c1"))
    shutil.rmtree(d)
    st = ipam.status()
    assert st["ready"] is False
    assert st["error"].startswith("ipam.dataDir: ")
    with pytest.raises(IpamError, match="^ipam.dataDir: "):
        ipam.allocate(req("c2"))
