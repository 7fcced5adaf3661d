"""The agent fed by the Kubernetes API source instead of manifests: nothing in the agent changes."""

from __future__ import annotations

import time

import novanet_kube_source.testing as kube_testing  # installed by setup-venv.sh: missing fails, not skips
import pytest

from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns]


def test_agent_takes_labels_and_label_changes_from_the_api_server():
    node = NodeUnderTest(datapath="kernel", extra={"stateSource": {"type": "kubernetes"}})
    api = kube_testing.FakeKubeAPI(netns=f"/run/netns/{node.ns}").start()
    node.set_config({"pluginSettings": {"kubernetes-source": {"apiServer": api.url, "watchTimeoutSeconds": 5}}})
    try:
        api.put({"kind": "Namespace", "metadata": {"name": "x", "labels": {"ns": "x"}}})
        pod = {"kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web"}},
               "spec": {"nodeName": node.config["nodeName"]}}
        api.put(pod)
        node.start()
        rc, _ = node.cni("ADD", "kubesrc00001", node.add_pod_netns(), args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
        assert rc == 0
        ident = {i["id"]: i for i in node.call("identity.list")}
        (web,) = [i for i in ident.values() if i["podCount"] == 1]
        assert web["labels"] == {"app": "web"}
        api.put({**pod, "metadata": {**pod["metadata"], "labels": {"app": "db"}}})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            eps = node.call("endpoints.list")
            if eps and eps[0]["identity"] != web["id"]:
                break
            time.sleep(0.1)
        labels = {i["id"]: i["labels"] for i in node.call("identity.list")}
        assert labels[eps[0]["identity"]] == {"app": "db"}, node.log("agent")
        assert node.call("status")["stateVersion"] > 1
    finally:
        node.close()
        api.stop()
