"""The agent's reading of the CNI bandwidth capability (runtimeConfig.bandwidth)."""

from __future__ import annotations

import pytest

from novanet_core.cni import bandwidth
from novanet_core.cni.install import conflist
from novanet_core.cni.protocol import ERR_INVALID_CONFIG, CniError


def test_no_capability_means_no_limit():
    assert bandwidth.limits({}) == (0, 0)
    assert bandwidth.limits({"runtimeConfig": {"portMappings": []}}) == (0, 0)


def test_rates_are_read_per_direction():
    bw = {"ingressRate": 40_000_000, "ingressBurst": 400_000, "egressRate": 0, "egressBurst": 0}
    assert bandwidth.limits({"runtimeConfig": {"bandwidth": bw}}) == (40_000_000, 0)
    assert bandwidth.limits({"runtimeConfig": {"bandwidth": {"egressRate": 1000}}}) == (0, 1000)


@pytest.mark.parametrize(("conf", "path"), [
    ({"runtimeConfig": []}, "runtimeConfig"),
    ({"runtimeConfig": {"bandwidth": "10M"}}, "runtimeConfig.bandwidth"),
    ({"runtimeConfig": {"bandwidth": {"ingressRate": "10M"}}}, "runtimeConfig.bandwidth.ingressRate"),
    ({"runtimeConfig": {"bandwidth": {"egressRate": -1}}}, "runtimeConfig.bandwidth.egressRate"),
    ({"runtimeConfig": {"bandwidth": {"egressBurst": True}}}, "runtimeConfig.bandwidth.egressBurst"),
    ({"runtimeConfig": {"bandwidth": {"ingressRate": 1.5}}}, "runtimeConfig.bandwidth.ingressRate"),
])
def test_bad_values_name_the_field(conf, path):
    with pytest.raises(CniError) as e:
        bandwidth.limits(conf)
    assert e.value.code == ERR_INVALID_CONFIG
    assert e.value.msg.startswith(f"{path}:")


def test_the_shipped_chain_gives_novanet_the_capability_too():
    # libcni passes runtimeConfig.bandwidth to each plugin that declares the capability
    plugins = conflist()["plugins"]
    assert [p["type"] for p in plugins if p.get("capabilities", {}).get("bandwidth")] == ["novanet-cni", "bandwidth"]
