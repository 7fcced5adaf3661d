"""The plugin's dataplane API methods and novanetctl commands over a real unix socket."""

from __future__ import annotations

import json
import os

import click
import pytest
from click.testing import CliRunner

from novanet_core.api.client import ApiClient
from novanet_core.api.protocol import ApiError
from novanet_core.api.server import ApiServer
from novanet_core.dataplane.service import DataplaneService
from tests.bpf.topo import Topology, ping

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


class _Obj:
    def __init__(self, path: str, output: str = "table"):
        self.path, self.output = path, output

    def dataplane(self) -> ApiClient:
        return ApiClient(self.path)


def test_api_and_cli(topo: Topology, datapath, tmp_path) -> None:
    from novanet_ebpf_policy import api, plugin

    a, b = topo.pods["a"], topo.pods["b"]
    # the dataplane's own router (dp.flows, which `drops` and `flows` read) plus the plugin's methods
    router = DataplaneService(datapath).router()
    api.register(router, lambda: datapath)
    sock = str(tmp_path / f"dp-{os.getpid()}.sock")
    srv = ApiServer(sock, router)
    srv.start()
    try:
        datapath.upsert_policy({"src_identity": a.identity, "dst_identity": b.identity, "protocol": 1,
                                "action": "deny"})
        ping(a, b.ip, count=2, deadline=3)
        c = ApiClient(sock)
        counters = c.call("ebpf.drops")
        assert counters["drops"]["POLICY_DENY_RULE"] >= 2
        assert {m["name"] for m in c.call("ebpf.maps")} >= {"endpoints", "policies", "config", "tunnels", "flows",
                                                             "egress", "drops"}
        with pytest.raises(ApiError) as ei:
            list(c.stream("ebpf.flows", {"identity": "x"}))
        assert ei.value.code == "invalid_params" and "identity" in ei.value.message
        with pytest.raises(ApiError) as ei:
            c.call("ebpf.policy_upsert", {"src_identity": 1, "dst_identity": 2, "action": "maybe"})
        assert "action" in ei.value.message

        cli = click.Group("novanetctl")
        plugin.novanet_register_cli(cli=cli, program="novanetctl")
        runner = CliRunner()
        r = runner.invoke(cli, ["drops"], obj=_Obj(sock))
        assert r.exit_code == 0, r.output
        lines = r.output.splitlines()
        assert lines[0].split() == ["TIMESTAMP", "SRC_IP", "DST_IP", "SRC_ID", "DST_ID", "PROTO", "PORT", "VERDICT",
                                    "BYTES", "DROP_REASON"]
        assert any(a.ip in ln and "POLICY_DENY_RULE" in ln and "ICMP" in ln for ln in lines[1:])
        r = runner.invoke(cli, ["flows", "--identity", str(a.identity), "-o", "json"], obj=_Obj(sock))
        evs = [json.loads(line) for line in r.output.splitlines()]  # one object per line
        assert evs and all(a.identity in (e["src_identity"], e["dst_identity"]) for e in evs)
        r = runner.invoke(cli, ["bpf"], obj=_Obj(sock))
        assert r.exit_code == 0 and "nv_from_pod" in r.output and "nv_to_pod" in r.output
        r = runner.invoke(cli, ["bpf", "-o", "json"], obj=_Obj(sock))
        from novanet_ebpf_policy.program import PROGRAMS

        assert {p["name"] for p in json.loads(r.output)["programs"]} == set(PROGRAMS)
    finally:
        srv.stop()


def test_bpf_stats_count_runs(topo: Topology, datapath) -> None:
    from novanet_core.bpf import stats

    prev = stats.set_stats_enabled(True)
    try:
        before = {p["name"]: p["run_cnt"] for p in datapath.bpf_stats()["programs"]}
        ping(topo.pods["a"], topo.pods["b"].ip, count=3)
        after = {p["name"]: p for p in datapath.bpf_stats()["programs"]}
    finally:
        stats.set_stats_enabled(prev)
    assert after["nv_from_pod"]["run_cnt"] - before["nv_from_pod"] >= 6  # requests and replies
    assert after["nv_from_pod"]["avg_ns"] > 0


def test_metrics_collector(topo: Topology, datapath) -> None:
    from novanet_ebpf_policy.metrics import DatapathCollector
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    reg.register(DatapathCollector(lambda: datapath))
    text = generate_latest(reg).decode()
    assert 'novanet_dataplane_drops_total{reason="POLICY_DENIED"}' in text
    assert "novanet_dataplane_flow_events_lost_total" in text
    assert "novanet_dataplane_endpoints 3.0" in text
