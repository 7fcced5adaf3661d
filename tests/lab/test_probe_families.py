"""Per-family probing without root: which families ``--family`` picks, the targets' addresses of
that family, tables titled per family only when more than IPv4 was probed, and the agent's
configuration refusal read from its log."""

from __future__ import annotations

from pathlib import Path

import pytest
from novanet_lab.agents import config_refusal
from novanet_lab.errors import LabError
from novanet_lab.probe import ProbeResult
from novanet_lab.reach import _select, families_for
from novanet_lab.state import LabState, PodState
from novanet_lab.table import results_tables


def _state(ips: dict[str, list[str]]) -> LabState:
    pods = {
        k: PodState(
            namespace=k.split("/")[0],
            name=k.split("/")[1],
            node="n",
            netns=f"l.pod.{k}",
            containerId="c",
            ip=v[0],
            ips=v,
        )
        for k, v in ips.items()
    }
    return LabState(name="vlt", pods=pods, spec={"cluster": {"clusterCIDR": "10.42.0.0/16,fd00:42::/48"}})


def test_family_choice() -> None:
    dual = _state({"x/a": ["10.42.0.2", "fd00:42::2"]})
    assert families_for(dual, "all") == [4, 6] and families_for(dual, "6") == [6]
    v6 = _state({"x/a": ["fd00:42::2"]})
    assert families_for(v6, "all") == [6]
    with pytest.raises(LabError, match="--family 4: the pods of lab vlt have no IPv4 addresses"):
        families_for(v6, "4")
    # a state written before dual-stack (no ips) is its pods' one address
    old = LabState(
        name="vlt",
        pods={"x/a": PodState(namespace="x", name="a", node="n", netns="p", containerId="c", ip="10.42.0.2")},
    )
    assert families_for(old, "all") == [4]


def test_targets_take_their_address_of_the_family() -> None:
    st = _state({"x/a": ["10.42.0.2", "fd00:42::2"], "x/b": ["10.42.0.3", "fd00:42::3"]})
    assert [e.ip for e in _select(st, [], "--to", 6)] == ["fd00:42::2", "fd00:42::3"]
    assert [e.ip for e in _select(st, ["x/b"], "--to", 4)] == ["10.42.0.3"]


def test_tables_name_the_family_only_beyond_ipv4() -> None:
    v4 = [ProbeResult("x/a", "x/b", 80, "TCP", True, "connected", 1.0, family=4)]
    assert results_tables(v4).splitlines()[0] == "TCP/80: 1 allowed, 0 blocked"
    dual = v4 + [ProbeResult("x/a", "x/b", 80, "TCP", False, "timeout", 9.0, family=6)]
    assert [t.splitlines()[0] for t in results_tables(dual).split("\n\n")] == [
        "TCP/80 IPv4: 1 allowed, 0 blocked",
        "TCP/80 IPv6: 0 allowed, 1 blocked",
    ]
    assert dual[1].to_json()["family"] == 6


def test_config_refusal_is_read_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text(
        "2026-12-01 10:00:00 INFO novanet.agent: starting\n"
        "2026-12-01 10:00:01 ERROR novanet.agent: fatal: clusterCIDR: fd00:42::/48 is IPv6, but ...\n"
    )
    assert config_refusal(log, "novanet-agent") == "clusterCIDR: fd00:42::/48 is IPv6, but ..."
    log.write_text("novanet-agent: nodeIP: fd00::2 is IPv6, but tunnelProtocol 'vxlan' runs over ...\n")
    assert (
        config_refusal(log, "novanet-agent")
        == "nodeIP: fd00::2 is IPv6, but tunnelProtocol 'vxlan' runs over ..."
    )
    log.write_text("Traceback (most recent call last):\n  boom\n")
    assert config_refusal(log, "novanet-agent") is None
    assert config_refusal(tmp_path / "missing.log", "novanet-agent") is None
