"""The agent's event hooks, observed by a third-party-style plugin loaded into a real agent."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture
def recorded_node(tmp_path, monkeypatch):
    log = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("NOVANET_TEST_HOOK_LOG", str(log))
    monkeypatch.setenv("NOVANET_PLUGINS", "tests.support.recording_plugin")
    node = NodeUnderTest(datapath="kernel")
    try:
        node.start()
        yield node, log
    finally:
        node.close()


def _events(log, hook):
    if not log.exists():
        return []
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["hook"] == hook]


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_hook_novanet_endpoint_added(recorded_node):
    node, log = recorded_node
    rc, out = node.cni("ADD", "hookadd00001", node.add_pod_netns(), args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
    assert rc == 0
    ev = _events(log, "novanet_endpoint_added")
    assert [(e["ip"], e["pod"]) for e in ev] == [(out["ips"][0]["address"].split("/")[0], "x/a")]
    assert ev[0]["identity"] > 0


def test_hook_novanet_endpoint_removed(recorded_node):
    node, log = recorded_node
    ns = node.add_pod_netns()
    rc, out = node.cni("ADD", "hookdel00001", ns, args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=b")
    assert node.cni("DEL", "hookdel00001", ns)[0] == 0
    assert node.cni("DEL", "hookdel00001", ns)[0] == 0  # a repeated DEL is not a second removal
    ev = _events(log, "novanet_endpoint_removed")
    assert [(e["ip"], e["pod"]) for e in ev] == [(out["ips"][0]["address"].split("/")[0], "x/b")]


def test_hook_novanet_nodes_changed(recorded_node):
    node, log = recorded_node
    node.write_manifest("nodes.yaml", [{
        "kind": "Node", "metadata": {"name": "far-away"}, "spec": {"podCIDR": "10.42.99.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.31.250.99"}]}}])
    assert _wait(lambda: any(e["remotes"] for e in _events(log, "novanet_nodes_changed")))
    last = _events(log, "novanet_nodes_changed")[-1]
    assert last["local"] == node.config["nodeName"]
    assert last["remotes"] == [["far-away", "172.31.250.99", "10.42.99.0/24"]]
    (node.dir / "manifests" / "nodes.yaml").unlink()
    assert _wait(lambda: _events(log, "novanet_nodes_changed")[-1]["remotes"] == [])
