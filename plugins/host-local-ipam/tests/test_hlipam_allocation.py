"""Allocation rules of the host-local IPAM backend: reservations, idempotency, requests, exhaustion, restarts."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from novanet_host_local_ipam import HostLocalIpam, Pool
from novanet_host_local_ipam.backend import DEFAULT_DATA_DIR
from novanet_host_local_ipam.plugin import create_backend
from novanet_host_local_ipam.store import LAST_RESERVED_FILE

from novanet_core.backends import BackendContext, ConfigError, IpamBackend, IpamError, PoolExhausted
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import IpamRequest, NodeInfo


def make(tmp_path: Path, cidr: str = "10.42.0.0/24") -> HostLocalIpam:
    return HostLocalIpam(Pool.parse(cidr), str(tmp_path / "ipam"))


def req(cid: str, ifname: str = "eth0", address: str | None = None) -> IpamRequest:
    return IpamRequest(container_id=cid, ifname=ifname, address=address)


# ---------------------------------------------------------------- factory and config


def test_factory_uses_config_podcidr_and_datadir_and_satisfies_protocol(tmp_path: Path) -> None:
    cfg = NovaNetConfig(podCIDR="10.42.3.0/24", ipam={"dataDir": str(tmp_path / "d")})
    backend = create_backend(BackendContext(config=cfg, component="agent"))
    assert isinstance(backend, IpamBackend)
    assert backend.pool.cidr == "10.42.3.0/24"
    assert backend.data_dir == str(tmp_path / "d")
    assert (tmp_path / "d").is_dir()


def test_factory_prefers_node_podcidr_over_config(tmp_path: Path) -> None:
    cfg = NovaNetConfig(podCIDR="10.42.3.0/24", ipam={"dataDir": str(tmp_path)})
    node = NodeInfo(name="n1", ip="192.0.2.10", pod_cidr="10.42.7.0/24")
    backend = create_backend(BackendContext(config=cfg, component="agent", node=node))
    assert backend.allocate(req("c1")).address == "10.42.7.2"


def test_factory_without_any_podcidr_raises_config_error_naming_podcidr(tmp_path: Path) -> None:
    cfg = NovaNetConfig(ipam={"dataDir": str(tmp_path)})
    with pytest.raises(ConfigError, match="^podCIDR: not set"):
        create_backend(BackendContext(config=cfg, component="agent"))


def test_bad_node_podcidr_raises_config_error_naming_podcidr_and_node(tmp_path: Path) -> None:
    cfg = NovaNetConfig(ipam={"dataDir": str(tmp_path)})
    node = NodeInfo(name="n1", ip="192.0.2.10", pod_cidr="10.42.7.1/24")  # host bits set
    with pytest.raises(ConfigError, match=r"^podCIDR \(of node 'n1'\): '10.42.7.1/24' is not a CIDR"):
        create_backend(BackendContext(config=cfg, component="agent", node=node))


@pytest.mark.parametrize(
    ("cidr", "message"),
    [("10.42.0.0/31", "too small"), ("fd00::/127", "too small"), ("banana", "not a CIDR")],
)
def test_unusable_pool_is_rejected_with_podcidr_in_message(cidr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^podCIDR: .*{message}"):
        Pool.parse(cidr)


def test_datadir_that_is_a_file_raises_config_error_naming_ipam_datadir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    cfg = NovaNetConfig(podCIDR="10.42.0.0/24", ipam={"dataDir": str(f)})
    with pytest.raises(ConfigError, match="^ipam.dataDir: "):
        create_backend(BackendContext(config=cfg, component="agent"))


def test_default_data_dir_matches_operator_guide_and_config_default() -> None:
    assert DEFAULT_DATA_DIR == "/var/lib/cni/networks/novanet"
    assert NovaNetConfig().ipam.dataDir == DEFAULT_DATA_DIR


# ---------------------------------------------------------------- reservations


def test_network_gateway_and_broadcast_are_never_handed_out(tmp_path: Path) -> None:
    ipam = make(tmp_path, "10.42.0.0/29")
    got = [ipam.allocate(req(f"c{i}")) for i in range(5)]
    assert sorted(a.address for a in got) == [f"10.42.0.{n}" for n in range(2, 7)]
    for a in got:
        assert a.gateway == "10.42.0.1"
        assert a.prefix_len == 29


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.42.0.0", "network address"),
        ("10.42.0.1", "gateway"),
        ("10.42.0.255", "broadcast address"),
        ("10.43.0.5", "outside pool 10.42.0.0/24"),
        ("not-an-ip", "is not an IP address"),
        ("fd00::5", "IPv6"),
    ],
)
def test_requested_address_that_cannot_be_assigned_is_refused(tmp_path: Path, address: str, why: str) -> None:
    ipam = make(tmp_path)
    with pytest.raises(IpamError, match=f"^address: .*{why}"):
        ipam.allocate(req("c1", address=address))
    assert ipam.list() == []


def test_capacity_of_slash_30_is_one_address(tmp_path: Path) -> None:
    ipam = make(tmp_path, "10.42.0.0/30")
    assert ipam.status()["capacity"] == 1
    assert ipam.allocate(req("c1")).address == "10.42.0.2"
    with pytest.raises(PoolExhausted):
        ipam.allocate(req("c2"))


# ---------------------------------------------------------------- idempotency and release


def test_allocate_twice_for_same_attachment_returns_same_address_and_one_file(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    first = ipam.allocate(req("c1"))
    again = ipam.allocate(req("c1"))
    assert again == first
    assert sorted(p.name for p in (tmp_path / "ipam").iterdir() if p.name[0].isdigit()) == [first.address]


def test_second_interface_of_same_container_gets_its_own_address(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    a = ipam.allocate(req("c1", "eth0"))
    b = ipam.allocate(req("c1", "net1"))
    assert a.address != b.address
    assert ipam.get("c1", "net1") == b


def test_state_file_holds_container_id_and_ifname_one_per_line(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    a = ipam.allocate(req("  abc123  ", "eth0"))
    content = (tmp_path / "ipam" / a.address).read_text()
    assert content.splitlines() == ["abc123", "eth0"]
    assert (tmp_path / "ipam" / LAST_RESERVED_FILE).read_text() == a.address
    assert a.container_id == "abc123"


def test_release_returns_addresses_then_nothing_and_unknown_release_is_empty(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    a = ipam.allocate(req("c1"))
    assert ipam.release("c1", "eth0") == [a.address]
    assert ipam.release("c1", "eth0") == []
    assert ipam.release("never-seen", "eth0") == []
    assert ipam.get("c1", "eth0") is None
    assert not (tmp_path / "ipam" / a.address).exists()


def test_release_only_touches_the_named_interface(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    ipam.allocate(req("c1", "eth0"))
    kept = ipam.allocate(req("c1", "net1"))
    ipam.release("c1", "eth0")
    assert ipam.list() == [kept]


@pytest.mark.parametrize(
    ("cid", "ifname", "field"),
    [("", "eth0", "container_id"), ("a\nb", "eth0", "container_id"), ("c1", "", "ifname"),
     ("c1", "eth 0", "ifname"), ("c1", "a" * 16, "ifname"), ("c1", "e\r\n", "ifname")],
)  # fmt: skip
def test_bad_attachment_key_is_refused_naming_the_field(
    tmp_path: Path, cid: str, ifname: str, field: str
) -> None:
    ipam = make(tmp_path)
    with pytest.raises(IpamError, match=f"^{field}: "):
        ipam.allocate(req(cid, ifname))
    with pytest.raises(IpamError, match=f"^{field}: "):
        ipam.release(cid, ifname)


# ---------------------------------------------------------------- requested address


def test_requested_free_address_is_granted(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    assert ipam.allocate(req("c1", address="10.42.0.77")).address == "10.42.0.77"
    assert ipam.get("c1", "eth0").address == "10.42.0.77"


def test_requested_address_held_by_another_attachment_is_refused_naming_owner(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    ipam.allocate(req("owner", address="10.42.0.77"))
    with pytest.raises(
        IpamError, match="^address: 10.42.0.77 is already allocated .*container owner interface eth0"
    ):
        ipam.allocate(req("thief", address="10.42.0.77"))
    assert ipam.get("thief", "eth0") is None


def test_requested_address_equal_to_existing_allocation_is_idempotent(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    a = ipam.allocate(req("c1"))
    assert ipam.allocate(req("c1", address=a.address)) == a


def test_requesting_a_different_address_for_an_allocated_attachment_is_refused(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    a = ipam.allocate(req("c1"))
    with pytest.raises(IpamError, match=f"^address: container c1 interface eth0 already has {a.address}"):
        ipam.allocate(req("c1", address="10.42.0.200"))


# ---------------------------------------------------------------- rotation and exhaustion


def test_allocation_rotates_instead_of_reusing_a_just_released_address(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    a = ipam.allocate(req("c1"))
    b = ipam.allocate(req("c2"))
    ipam.release("c1", "eth0")
    c = ipam.allocate(req("c3"))
    assert c.address not in (a.address, b.address)
    assert ipaddress.ip_address(c.address) > ipaddress.ip_address(b.address)


def test_rotation_wraps_to_pool_start_after_the_last_address(tmp_path: Path) -> None:
    ipam = make(tmp_path, "10.42.0.0/29")
    for i in range(5):
        ipam.allocate(req(f"c{i}"))  # .2 .. .6, last reserved .6
    ipam.release("c1", "eth0")  # frees .3
    ipam.release("c3", "eth0")  # frees .5
    assert ipam.allocate(req("new")).address == "10.42.0.3"


def test_exhausted_pool_raises_pool_exhausted_naming_pool_and_capacity(tmp_path: Path) -> None:
    ipam = make(tmp_path, "10.42.0.0/29")
    for i in range(5):
        ipam.allocate(req(f"c{i}"))
    with pytest.raises(
        PoolExhausted, match=r"IPAM pool 10\.42\.0\.0/29 is exhausted: all 5 assignable"
    ) as ei:
        ipam.allocate(req("one-too-many"))
    assert ei.value.code == 110
    assert "one-too-many" in str(ei.value)
    # An exhausted pool recovers as soon as something is released.
    freed = ipam.release("c2", "eth0")
    assert ipam.allocate(req("one-too-many")).address == freed[0]


# ---------------------------------------------------------------- restarts


def test_new_instance_over_same_dir_sees_all_allocations_and_keeps_rotating(tmp_path: Path) -> None:
    before = make(tmp_path)
    got = {f"c{i}": before.allocate(req(f"c{i}")) for i in range(3)}
    before.release("c2", "eth0")
    del before

    after = make(tmp_path)
    assert after.list() == [got["c0"], got["c1"]]
    assert after.get("c1", "eth0") == got["c1"]
    assert after.allocate(req("c0")) == got["c0"]
    # The address c2 just gave back is not handed straight to the next pod.
    assert after.allocate(req("c9")).address not in {a.address for a in got.values()}


def test_release_through_one_instance_is_seen_by_another(tmp_path: Path) -> None:
    one, two = make(tmp_path), make(tmp_path)
    a = one.allocate(req("c1"))
    assert two.get("c1", "eth0") == a
    assert two.release("c1", "eth0") == [a.address]
    assert one.get("c1", "eth0") is None


def test_status_counts_capacity_allocated_and_free(tmp_path: Path) -> None:
    ipam = make(tmp_path)
    for i in range(4):
        ipam.allocate(req(f"c{i}"))
    st = ipam.status()
    assert st["ready"] is True
    assert st["pool"] == "10.42.0.0/24"
    assert (st["capacity"], st["allocated"], st["free"]) == (253, 4, 249)
    assert st["foreign"] == []
    assert st["dataDir"] == os.path.join(str(tmp_path), "ipam")
