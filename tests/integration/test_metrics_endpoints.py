"""Both daemons serve /metrics by default, and `promtool check metrics` finds nothing to say."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def scrape(node: NodeUnderTest, address: str) -> str:
    r = subprocess.run(["nsenter", f"--net=/run/netns/{node.ns}", "python3", "-c", FETCH, f"http://{address}/metrics"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


@pytest.fixture
def node():
    # No metrics keys in the config: the defaults (agent 127.0.0.1:9103, dataplane 127.0.0.1:9104) apply.
    n = NodeUnderTest(datapath="ebpf")
    del n.config["metrics"]
    n.set_config({})
    try:
        n.start()
        yield n
    finally:
        n.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool: contrib/install-deps.sh installs prometheus")
def test_both_endpoints_by_default_and_promtool_clean(node: NodeUnderTest) -> None:
    ns = node.add_pod_netns()
    rc, out = node.cni("ADD", "metricsadd001", ns, args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
    assert rc == 0, out
    assert node.cni("DEL", "metricsadd001", ns)[0] == 0
    agent, dataplane = scrape(node, "127.0.0.1:9103"), scrape(node, "127.0.0.1:9104")
    for name, text in (("agent", agent), ("dataplane", dataplane)):
        r = promtool(text)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), f"{name}: {r.stdout}{r.stderr}"
        assert f'novanet_build_info{{component="{name}"' in text
    for want in ('novanet_cni_operations_total{operation="ADD",result="success"} 1.0',
                 'novanet_cni_operations_total{operation="DEL",result="success"} 1.0',
                 'novanet_cni_operation_duration_seconds_count{operation="ADD"} 1.0',
                 "novanet_agent_endpoints 0.0", "novanet_agent_dataplane_connected 1.0",
                 "novanet_agent_policy_programming_seconds_bucket"):
        assert want in agent, want
    for want in ('novanet_dataplane_drops_total{reason="POLICY_DENIED"}', "novanet_dataplane_flow_events_lost_total",
                 'novanet_bpf_map_max_entries{map="endpoints"} 65536.0', 'novanet_bpf_map_fill_ratio{map="ct"}'):
        assert want in dataplane, want
    assert "_total " not in "\n".join(ln for ln in agent.splitlines() if ln.startswith("# TYPE") and "gauge" in ln)


def test_promtool_catches_what_the_conventions_forbid() -> None:
    """The check above means something: the names the agent used before are flagged."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    bad = "# HELP novanet_agent_endpoints_total Local pod endpoints\n# TYPE novanet_agent_endpoints_total gauge\n" \
          "novanet_agent_endpoints_total 3\n"
    r = promtool(bad)
    assert r.returncode != 0 and "_total" in r.stdout + r.stderr
