"""Fuzzing the running daemons: a real agent and dataplane (ebpf datapath) in a node netns with
two pods and a NetworkPolicy in force, their three sockets fed hostile requests for a few seconds
each (bench/fuzz.py runs minutes). After every refused request the node's state must be what it
was, and after every round both daemons must still serve a good request and the pods still talk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from novanet_core.api.client import ApiClient
from tests.fuzz import api_targets, harness, targets
from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

MISSING_NETNS = "/run/netns/novanet-fuzz-does-not-exist"


class FuzzNode:
    def __init__(self) -> None:
        self.node = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.13.0/24")
        self.pod_ns: list[str] = []
        self.ips: list[str] = []

    def start(self) -> None:
        n = self.node
        n.write_manifest("fuzz.yaml", [
            {"kind": "Namespace", "metadata": {"name": "fz"}},
            {"kind": "Pod", "metadata": {"name": "a", "namespace": "fz", "labels": {"app": "a"}},
             "spec": {"nodeName": n.config["nodeName"]}},
            {"kind": "Pod", "metadata": {"name": "b", "namespace": "fz", "labels": {"app": "b"}},
             "spec": {"nodeName": n.config["nodeName"]}},
            {"kind": "NetworkPolicy", "metadata": {"name": "b-from-a", "namespace": "fz"},
             "spec": {"podSelector": {"matchLabels": {"app": "b"}},
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]}},
        ])
        n.start(wait=120)
        for i, pod in enumerate(("a", "b")):
            ns = n.add_pod_netns()
            rc, out = n.cni("ADD", f"fuzzpod{i}{n.id}", ns, args=f"K8S_POD_NAMESPACE=fz;K8S_POD_NAME={pod}")
            assert rc == 0, out
            self.pod_ns.append(ns)
            self.ips.append(out["ips"][0]["address"].split("/")[0])

    def dp(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with ApiClient(self.node.config["sockets"]["dataplane"], timeout=20) as c:
            return c.call(method, params)

    def state(self) -> dict[str, Any]:
        return api_targets.node_state(self.node, self.dp)

    def healthy(self) -> None:
        assert self.node.call("status")["ready"]
        assert self.dp("dp.status")["generation"]
        r = sh("nsenter", f"--net={self.pod_ns[0]}", "ping", "-c", "1", "-W", "2", self.ips[1], check=False)
        if r.returncode != 0:
            raise harness.Finding(f"pod a no longer reaches pod b after a fuzz round: {r.stdout[-300:]}")

    def close(self) -> None:
        self.node.close()


@pytest.fixture(scope="module")
def fnode() -> Iterator[FuzzNode]:
    f = FuzzNode()
    try:
        f.start()
        yield f
    finally:
        f.close()


def _cni_conf(node: NodeUnderTest) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "novanet", "type": "novanet-cni", "agentSocket": node.config["sockets"]["cni"]}


def agent_methods(f: FuzzNode) -> dict[str, list[dict[str, Any]]]:
    names = f.node.call("methods")
    seeds: dict[str, list[dict[str, Any]]] = {m: [{}] for m in names}
    seeds["dataplane.call"] = [{"method": "dp.status", "params": {}}, {"method": "ebpf.drops"},
                               {"method": "dp.endpoint.delete", "params": {"ip": "10.42.13.250"}}]
    seeds["policy.drops"] = [{"limit": 5}]
    return seeds


def cni_methods(f: FuzzNode) -> dict[str, list[dict[str, Any]]]:
    conf = _cni_conf(f.node)
    add = {"command": "ADD", "containerID": "fuzzadd00001", "ifname": "eth0", "netns": MISSING_NETNS,
           "args": {"K8S_POD_NAMESPACE": "fz", "K8S_POD_NAME": "c"}, "config": conf}
    return {
        "cni.add": [add],
        "cni.del": [{"command": "DEL", "containerID": "fuzzdel00001", "ifname": "eth0", "netns": "", "args": {},
                     "config": conf}],
        "cni.check": [{**add, "command": "CHECK", "containerID": f"fuzzpod0{f.node.id}",
                       "config": {**conf, "prevResult": {"ips": [{"address": f"{f.ips[0]}/32"}]}}}],
        "cni.status": [{"command": "STATUS", "config": conf}],
    }


def dataplane_methods(f: FuzzNode) -> dict[str, list[dict[str, Any]]]:
    names = f.dp("dp.methods")
    seeds: dict[str, list[dict[str, Any]]] = {m: [{}] for m in names if m not in ("ebpf.reload", "ebpf.flows")}
    fake = {"container_id": "fuzzfake0001", "ifname": "eth0", "namespace": "fz", "pod": "fake",
            "netns": MISSING_NETNS, "ip": "10.42.13.251", "mac": "02:00:00:00:00:01", "host_ifname": "nvfuzzfake00",
            "host_ifindex": 999999, "host_mac": "02:00:00:00:00:02", "gateway": "10.42.13.1", "mtu": 1500,
            "identity": 60000, "labels": {}, "node_ip": f.node.node_ip}
    seeds.update({
        "dp.endpoint.upsert": [{"endpoint": fake}],
        "dp.endpoint.delete": [{"ip": "10.42.13.251", "host_ifname": "nvfuzzfake00"}],
        "dp.remote.upsert": [{"remote": {"ip": "10.42.77.5", "identity": 60001, "node_ip": "172.31.250.77"}}],
        "dp.remote.delete": [{"ip": "10.42.77.5"}],
        "dp.service.delete": [{"key": "fz/none:80/TCP"}],
        "ebpf.policy_upsert": [{"src_identity": 60002, "dst_identity": 60003, "protocol": 6, "dst_port": 80,
                                "action": "deny"}],
        "ebpf.policy_delete": [{"src_identity": 60002, "dst_identity": 60003, "protocol": 6, "dst_port": 80}],
        "ebpf.tunnel_delete": [{"node_ip": "172.31.250.77"}],
        "ebpf.flows": [{"limit": 5}, {"drops_only": True, "limit": 3}],
        "policy.apply": [{"endpoints": [], "delete": []}],
    })
    return seeds


def _restore(f: FuzzNode) -> None:
    """After a request that was accepted (and so may have changed things): the agent puts the
    datapath back to what it wants."""
    f.node.call("reconcile")


def _run(f: FuzzNode, name: str, path: str, methods: dict[str, list[dict[str, Any]]], seconds: float) -> None:
    t = api_targets.SocketTarget(path, f.state, f.healthy)
    base = f.state()

    def between() -> None:
        # Accepted requests may change things (that is what they are for): the agent's reconcile
        # must then bring the node back, and it must work again.
        if t.changed_by_success:
            _restore(f)
            t.before = f.state()
            t.changed_by_success = 0
        try:
            f.healthy()
        except harness.Finding as e:
            raise harness.Finding(f"{e}; requests that changed state before it: {t.accepted_log}") from None

    rep = harness.run(name, api_targets.requests(methods), t.check, seconds, between=between)
    _restore(f)
    after = f.state()
    # Endpoints, IPAM and the pods' records are back to exactly what they were.
    for k in ("endpoints", "ipam", "ipam_files", "records"):
        assert after[k] == base[k], f"{name}: {k} differ after the run"
    harness.assert_clean(rep)


def test_fuzz_agent_control_socket(fnode: FuzzNode) -> None:
    _run(fnode, "agent-socket", fnode.node.config["sockets"]["agent"], agent_methods(fnode), harness.budget(8))


def test_fuzz_agent_cni_socket(fnode: FuzzNode) -> None:
    _run(fnode, "cni-socket", fnode.node.config["sockets"]["cni"], cni_methods(fnode), harness.budget(8))


def test_fuzz_dataplane_socket(fnode: FuzzNode) -> None:
    _run(fnode, "dataplane-socket", fnode.node.config["sockets"]["dataplane"], dataplane_methods(fnode),
         harness.budget(8))


def test_fuzz_cni_client_against_the_agent(fnode: FuzzNode, tmp_path) -> None:
    """The CNI client in-process, talking to the real agent: the agentSocket in every input is
    pointed at it, so well-formed requests reach the agent's handlers."""
    sock_dir = str(tmp_path)
    import os

    os.symlink(fnode.node.config["sockets"]["cni"], os.path.join(sock_dir, "cni.sock"))
    check = targets.make_cni_check(sock_dir)
    base = fnode.state()
    rep = harness.run("cni-client-agent", targets.cni_inputs(gc=False), check, harness.budget(8), between=fnode.healthy)
    _restore(fnode)
    after = fnode.state()
    for k in ("endpoints", "ipam", "ipam_files"):
        assert after[k] == base[k], f"cni-client-agent: {k} differ after the run"
    harness.assert_clean(rep)


@pytest.mark.parametrize("attachments", ["all", {}, [{"ifname": "eth0"}], [["fuzzpod0"]], [{"containerID": 7}]])
def test_gc_with_a_malformed_attachment_list_changes_nothing(fnode: FuzzNode, attachments: Any) -> None:
    """Found while writing the cni-socket target (which cannot safely send GC): the agent's GC
    iterated whatever it was given, and {} iterates as an empty list, so it removed every pod.
    Now the agent checks the request as the client does."""
    before = fnode.state()
    conf = {**_cni_conf(fnode.node), "cni.dev/valid-attachments": attachments}
    answers = api_targets.exchange(fnode.node.config["sockets"]["cni"], api_targets._line(
        {"v": 1, "id": 1, "method": "cni.gc", "params": {"command": "GC", "config": conf}}))
    assert answers[0]["error"]["code"] == "invalid_params", answers
    assert "valid-attachments" in answers[0]["error"]["message"]
    assert fnode.state() == before
