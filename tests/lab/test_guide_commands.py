"""Every diagnostic command the guide names, run against a live 2-node lab through the real CLIs.

status (the guide's fields), identity, tunnels, policy, policy explain (compiled answer vs the
live maps), flows and drops with Hubble-style filters, -o json lines and pod names, metrics,
egress, the cluster-wide `novanet lab flows`, the debug bundle with the guide's 11 items, routes
shown as `proto novanet`, and exit 3 with one line when a daemon is down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import BIN, LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf]

SPEC = {
    "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan"},
    "underlay": {"cidr": "172.30.0.0/24"},
    "nodes": [{"name": "node-1"}, {"name": "node-2"}],
    "namespaces": [{"name": "x"}, {"name": "y"}],
    "pods": [
        {"name": "a", "namespace": "x", "node": "node-1", "labels": {"app": "a"}},
        {"name": "b", "namespace": "x", "node": "node-2", "labels": {"app": "b"},
         "ports": [{"port": 80, "protocol": "TCP"}]},
        {"name": "c", "namespace": "y", "node": "node-1", "labels": {"app": "c"}},
    ],
}

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]
"""


def ctl(lab: LabUnderTest, *args: str, node: str = "node-1", check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(BIN / "novanetctl"), "--node", node, "--lab", lab.name, *args], capture_output=True,
                       text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"novanetctl {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def connect(lab: LabUnderTest, pod: str, ip: str, port: int) -> bool:
    code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2).close()\n"
            " print('ok')\nexcept OSError:\n print('no')\n")
    return lab.run_in(lab.pod_netns(pod), "python3", "-c", code, ip, str(port)).stdout.strip() == "ok"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guide")
    lab = LabUnderTest(SPEC, tmp)
    try:
        lab.up()
        f = tmp / "policy.yaml"
        f.write_text(POLICY)
        lab.cli("lab", "apply", "-f", str(f))
        b = lab.pod_ip("x/b")
        assert connect(lab, "x/a", b, 80)  # allowed by b-from-a (cross node, through the tunnel)
        assert not connect(lab, "y/c", b, 80)  # denied: b is isolated for ingress
        yield lab
    finally:
        lab.down()


def test_status_has_the_guide_fields(lab):
    text = ctl(lab, "status").stdout
    for field in ("Routing Mode:", "Tunnel Protocol:", "Node IP:", "Pod CIDR:", "Cluster CIDR:", "Endpoints:",
                  "Policies:", "Tunnels:", "Identities:", "Dataplane:", "Attached Programs:", "Routing Connected:"):
        assert field in text, field
    st = json.loads(ctl(lab, "status", "-o", "json").stdout)
    assert st["ready"] and st["dataplane"]["connected"] and st["endpoints"] == 2 and st["masquerade"] is True
    verbose = ctl(lab, "status", "-v").stdout
    assert "INTERFACE" in verbose and "ingress" in verbose and "egress" in verbose


def test_routes_show_proto_novanet(lab):
    routes = lab.run_in(lab.node_netns("node-1"), "ip", "route", "show").stdout
    assert "proto novanet" in routes, routes
    assert "openr" not in routes


def test_identity_tunnels_policy(lab):
    ids = json.loads(ctl(lab, "identity", "-o", "json").stdout)
    assert {"app": "a"} in [i["labels"] for i in ids]
    tun = json.loads(ctl(lab, "tunnels", "-o", "json").stdout)
    assert [t["node"] for t in tun] == ["node-2"]
    pol = json.loads(ctl(lab, "policy", "-o", "json", node="node-2").stdout)
    assert "x/b-from-a" in pol["policies"] and any(r["action"] == "DENY" for r in pol["rules"])


def test_policy_explain_names_the_rule_and_agrees_with_the_maps(lab):
    # decided on node-2 (b's ingress): the datapath's maps are read there
    res = json.loads(ctl(lab, "policy", "explain", "--from", "y/c", "--to", "x/b", "--port", "80", "-o", "json",
                         node="node-2").stdout)
    c = res["compiled"]
    assert c["verdict"] == "DENIED (ingress)" and c["ingress"]["selected_by"] == ["x/b-from-a"]
    assert res["datapath"]["allowed"] is False and res["comparison"]["ingress"]["agrees"] is True
    ok = json.loads(ctl(lab, "policy", "explain", "--from", "x/a", "--to", "x/b", "--port", "80", "-o", "json",
                        node="node-2").stdout)
    assert ok["compiled"]["allowed"] and ok["compiled"]["ingress"]["admitted_by"][0]["policy"] == "x/b-from-a"
    assert ok["datapath"]["allowed"] and ok["comparison"]["agree"]
    text = ctl(lab, "policy", "explain", "--from", "y/c", "--to", "x/b", "--port", "80", node="node-1").stdout
    assert "not checked here" in text and "node-2" in text and "verdict: DENIED" in text
    bad = ctl(lab, "policy", "explain", "--from", "x/nope", "--to", "x/b", "--port", "80", check=False)
    assert bad.returncode == 1 and "from" in bad.stderr and "Traceback" not in bad.stderr


def test_flows_filters_names_and_json_lines(lab):
    a, b = lab.pod_ip("x/a"), lab.pod_ip("x/b")
    evs = lines(ctl(lab, "flows", "--from-pod", "x/a", "--protocol", "TCP", "-o", "json").stdout)
    assert evs and all(e["src_pod"] == "x/a" and e["protocol_name"] == "TCP" for e in evs)
    assert any(e["dst_ip"] == b and e["dst_pod"] == "x/b" and "SYN" in e["tcp_flags_names"] for e in evs)
    compact = ctl(lab, "flows", "--pod", "x/a", "--port", "80", "-o", "compact").stdout
    assert "x/a:" in compact and "x/b:80" in compact and "FORWARDED" in compact
    assert all(e["src_ip"] != a for e in lines(ctl(lab, "flows", "--namespace", "y", "-o", "json").stdout)
               if e["src_pod"] != "y/c")
    by_label = lines(ctl(lab, "flows", "--label", "app=c", "-o", "json", node="node-2").stdout)
    assert by_label and all("y/c" in (e["src_pod"], e["dst_pod"]) for e in by_label)
    drops = json.loads(ctl(lab, "drops", "--reason", "POLICY_DENIED", "-o", "json", node="node-2").stdout)
    assert any(e["src_pod"] == "y/c" and e["policies"] == ["x/b-from-a"] for e in drops["events"])
    assert drops["drops"]["POLICY_DENIED"] >= 1
    a_id = next(i["id"] for i in json.loads(ctl(lab, "identity", "-o", "json").stdout) if i["labels"] == {"app": "a"})
    by_id = lines(ctl(lab, "flows", "--identity", str(a_id), "-o", "json").stdout)  # the guide's form
    assert by_id and all(a_id in (e["src_identity"], e["dst_identity"]) for e in by_id)
    bad = ctl(lab, "flows", "--pod", "nonsense", check=False)
    assert bad.returncode == 2 and "filter.pod" in bad.stderr


def test_flows_follow_streams_json_lines(lab):
    p = subprocess.Popen([str(BIN / "novanetctl"), "--node", "node-1", "--lab", lab.name, "flows", "-f", "--last",
                          "0", "--from-pod", "x/a", "-o", "json"], stdout=subprocess.PIPE, text=True,
                         # Ctrl-C as at a terminal: a suite started as a background job (`make test &`)
                         # hands its children SIGINT ignored, and Python then never raises on it.
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        got = None
        while got is None and time.monotonic() < deadline:
            connect(lab, "x/a", lab.pod_ip("x/b"), 80)  # a new connection: a new flow event
            line = p.stdout.readline()
            got = json.loads(line) if line.strip() else None
        assert got is not None and got["src_pod"] == "x/a"
    finally:
        # Ctrl-C stops the follower; its output is read to the end meanwhile, as a terminal would.
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AssertionError("novanetctl flows -f did not stop within 30 s of SIGINT") from None


def test_metrics_summary(lab):
    m = json.loads(ctl(lab, "metrics", "-o", "json").stdout)
    a, d = m["agent"], m["datapath"]
    assert a["endpoints"] == 2 and a["cni"]["ADD"]["success"] >= 2 and a["cni"]["ADD"]["p99_ms"] > 0
    assert d["traffic"]["egress"]["FORWARDED"]["packets"] > 0 and d["traffic"]["egress"]["NEW_FLOW"]["packets"] > 0
    assert {x["name"] for x in d["maps"]} >= {"endpoints", "ct", "egress"}
    text = ctl(lab, "metrics").stdout
    assert "NOVANET METRICS SUMMARY" in text and "forwarded" in text and "Flow events:" in text


def test_lab_flows_merges_nodes_in_time_order(lab):
    r = lab.cli("lab", "flows", "--last", "200", "-o", "json")
    evs = lines(r.stdout)
    assert {e["node"] for e in evs} == {"node-1", "node-2"}
    ts = [e["timestamp_ns"] for e in evs]
    assert ts == sorted(ts)
    only = lines(lab.cli("lab", "flows", "--to-pod", "x/b", "-o", "json").stdout)
    assert only and all(e["dst_pod"] == "x/b" for e in only)


def test_debug_bundle_has_the_guides_items(lab, tmp_path):
    out = tmp_path / "bundle.tar.gz"
    r = ctl(lab, "debug-bundle", "--out", str(out), node="node-2")
    assert "11/11 guide items" in r.stdout, r.stdout
    with tarfile.open(out) as t:
        files = {m.name.removeprefix("novanet-debug/"): t.extractfile(m).read().decode() for m in t.getmembers()}
    index = json.loads(files["index.json"])
    for n, item in index["guide_items"].items():
        assert item["file"] in files, (n, item)
    assert "started" in files[index["guide_items"]["2"]["file"]]  # the agent's own log lines
    assert "novanet-dataplane" in files[index["guide_items"]["3"]["file"]]
    assert "vxlan" in files[index["guide_items"]["9"]["file"]]
    assert "b-from-a" in files[index["guide_items"]["10"]["file"]]
    assert "172.30.0" in files[index["guide_items"]["5"]["file"]]
    for extra in ("egress.json", "bpf-stats.json", "policy.json", "datapath-stats.json", "status.json"):
        assert extra in files, extra
    assert json.loads(files["egress.json"])["rules"]


def test_daemon_down_exits_3_with_one_line(lab):
    """Last: it kills node-1's dataplane (and brings it back for the module's teardown)."""
    pid = int(Path(lab.paths.daemon_pid("node-1", "dataplane")).read_text())
    os.kill(pid, signal.SIGKILL)
    try:
        for args in (["flows"], ["drops"], ["bpf"], ["egress"], ["policy", "--datapath"], ["endpoints"]):
            r = ctl(lab, *args, check=False)
            assert r.returncode == 3, (args, r.returncode, r.stdout, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        out = ctl(lab, "debug-bundle", "--out", str(lab.paths.state_dir / "down.tar.gz"))
        assert "could not collect" in out.stdout  # the dataplane's items, recorded, not fatal
    finally:
        lab.cli("lab", "restart", "--node", "node-1", "--daemon", "dataplane")
