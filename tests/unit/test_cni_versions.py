"""Result conversion between CNI versions, as libcni's types100/types040 convert (golden cases)."""

from __future__ import annotations

import pytest

from novanet_core.cni.versions import SUPPORTED_VERSIONS, ConversionError, convert

FULL_V1 = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "nvabc", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1450, "sandbox": "/run/netns/p", "socketPath": "",
         "pciID": "0000:00:01.0", "extra": "dropped"},
    ],
    "ips": [{"address": "10.42.0.5/32", "gateway": "10.42.0.1", "interface": 1},
            {"address": "fd00::5/128", "interface": 1, "gateway": ""}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.42.0.1", "mtu": 0, "table": 0, "scope": None}],
    "dns": {"nameservers": ["10.96.0.10"], "search": [], "unknown": 1},
    "somethingElse": True,
}


def test_1x_to_04x_adds_ip_versions_and_keeps_only_040_interface_fields():
    out = convert(FULL_V1, "0.4.0")
    assert out == {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "nvabc", "mac": "aa:bb:cc:dd:ee:01"},
                       {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/p"}],
        "ips": [{"version": "4", "interface": 1, "address": "10.42.0.5/32", "gateway": "10.42.0.1"},
                {"version": "6", "interface": 1, "address": "fd00::5/128"}],
        # routes are one Go type in both versions: copied whole (zero values omitted, pointers kept)
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.42.0.1", "table": 0}],
        "dns": {"nameservers": ["10.96.0.10"]},
    }


@pytest.mark.parametrize("target", ["0.3.0", "0.3.1"])
def test_03x_has_the_040_shape(target):
    assert convert(FULL_V1, target) == {**convert(FULL_V1, "0.4.0"), "cniVersion": target}


def test_1_1_to_1_0_only_changes_the_version():
    v10 = convert(FULL_V1, "1.0.0")
    assert v10["cniVersion"] == "1.0.0"
    assert v10["interfaces"][1] == {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1450, "sandbox": "/run/netns/p",
                                    "pciID": "0000:00:01.0"}
    assert "version" not in v10["ips"][0] and "gateway" not in v10["ips"][1]
    assert {**v10, "cniVersion": "1.1.0"} == convert(FULL_V1, "1.1.0")


def test_empty_dns_is_omitted_in_1x_and_present_in_0x():
    r = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}
    assert "dns" not in convert(r, "1.0.0")
    assert convert(r, "0.4.0")["dns"] == {}
    assert "interfaces" not in convert(r, "0.4.0") and "routes" not in convert(r, "1.1.0")


def test_0x_to_1x_drops_the_ip_version_and_040_only_interfaces():
    old = convert(FULL_V1, "0.3.1")
    up = convert(old, "1.1.0")
    assert all("version" not in ip for ip in up["ips"])
    assert up["interfaces"][1] == {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/p"}
    assert "dns" in up  # nameservers survive the round trip


def test_no_cni_version_means_the_latest_and_every_version_round_trips_its_own_shape():
    bare = {k: v for k, v in FULL_V1.items() if k != "cniVersion"}
    assert convert(bare, "1.1.0") == convert(FULL_V1, "1.1.0")
    for v in SUPPORTED_VERSIONS:
        once = convert(FULL_V1, v)
        assert convert(once, v) == once


@pytest.mark.parametrize("bad", [("0.2.0", FULL_V1), ("1.1.0", {"cniVersion": "0.1.0"}),
                                 ("1.0.0", {"ips": [{"gateway": "x"}]})])
def test_unsupported_versions_and_bad_results_are_errors(bad):
    target, result = bad
    with pytest.raises(ConversionError):
        convert(result, target)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_a_dual_stack_result_keeps_both_addresses_gateways_and_routes_at_every_version(version):
    r = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}],
         "ips": [{"address": "fd00:42:0:7::2/128", "gateway": "fd00:42:0:7::1", "interface": 0},
                 {"address": "10.42.7.2/32", "gateway": "10.42.7.1", "interface": 0}],
         "routes": [{"dst": "::/0", "gw": "fd00:42:0:7::1"}, {"dst": "0.0.0.0/0", "gw": "10.42.7.1"}]}
    out = convert(r, version)
    assert [(i["address"], i["gateway"]) for i in out["ips"]] == [("fd00:42:0:7::2/128", "fd00:42:0:7::1"),
                                                                 ("10.42.7.2/32", "10.42.7.1")]
    assert [i.get("version") for i in out["ips"]] == (["6", "4"] if version.startswith("0.") else [None, None])
    assert out["routes"] == r["routes"]
