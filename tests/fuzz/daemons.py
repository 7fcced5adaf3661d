"""The node the daemon fuzz targets run against, the example requests of each socket's methods,
and the loop that runs one socket target (shared by tests/fuzz/test_fuzz_daemons.py and
bench/fuzz.py)."""

from __future__ import annotations

import os
from typing import Any

from novanet_core.api.client import ApiClient
from tests.fuzz import api_targets, harness, targets
from tests.support.node import NodeUnderTest, sh

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


def cni_conf(node: NodeUnderTest) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "novanet", "type": "novanet-cni", "agentSocket": node.config["sockets"]["cni"]}


def agent_methods(f: FuzzNode) -> dict[str, list[dict[str, Any]]]:
    names = f.node.call("methods")
    seeds: dict[str, list[dict[str, Any]]] = {m: [{}] for m in names}
    seeds["dataplane.call"] = [{"method": "dp.status", "params": {}}, {"method": "ebpf.drops"},
                               {"method": "dp.endpoint.delete", "params": {"ip": "10.42.13.250"}}]
    seeds["policy.drops"] = [{"limit": 5}]
    return seeds


def cni_methods(f: FuzzNode) -> dict[str, list[dict[str, Any]]]:
    conf = cni_conf(f.node)
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
        "ebpf.flows": [{"limit": 5}, {"drops_only": True, "limit": 3}],
        "policy.apply": [{"endpoints": [], "delete": []}],
    })
    return seeds


def restore(f: FuzzNode) -> None:
    """After a request that was accepted (and so may have changed things): the agent puts the
    datapath back to what it wants."""
    f.node.call("reconcile")


def _end_state(f: FuzzNode, name: str, base: dict[str, Any], rep: harness.Report, keys: tuple[str, ...]) -> None:
    restore(f)
    after = f.state()
    # Endpoints, IPAM and the pods' records are back to exactly what they were.
    for k in keys:
        if after[k] != base[k]:
            rep.findings.setdefault(f"Finding: {k} differ after the run", (f"{k}: {base[k]!r} -> {after[k]!r}"[:300],
                                                                          "the whole run"))


def run_socket(f: FuzzNode, name: str, path: str, methods: dict[str, list[dict[str, Any]]],
               seconds: float) -> harness.Report:
    t = api_targets.SocketTarget(path, f.state, f.healthy)
    base = f.state()

    def between() -> None:
        # Accepted requests may change things (that is what they are for): the agent's reconcile
        # must then bring the node back, and it must work again.
        if t.changed_by_success:
            restore(f)
            t.before = f.state()
            t.changed_by_success = 0
        try:
            f.healthy()
        except harness.Finding as e:
            raise harness.Finding(f"{e}; requests that changed state before it: {t.accepted_log}") from None

    rep = harness.run(name, api_targets.requests(methods), t.check, seconds, between=between)
    _end_state(f, name, base, rep, ("endpoints", "ipam", "ipam_files", "records"))
    return rep


def run_cni_client(f: FuzzNode, sock_dir: str, seconds: float, binary: str | None = None) -> harness.Report:
    """A CNI client talking to the real agent: the Python client in-process, or ``binary`` (the C
    client) exec'd per case. The agentSocket in every input is pointed at the agent, so
    well-formed requests reach its handlers."""
    link = os.path.join(sock_dir, "cni.sock")
    if not os.path.exists(link):
        os.symlink(f.node.config["sockets"]["cni"], link)
    base = f.state()
    name = "cni-c-binary-agent" if binary else "cni-client-agent"
    check = targets.make_cni_check(sock_dir, targets.binary_runner(binary) if binary else None)
    rep = harness.run(name, targets.cni_inputs(gc=False), check, seconds, between=f.healthy)
    _end_state(f, name, base, rep, ("endpoints", "ipam", "ipam_files"))
    return rep


def run_all(f: FuzzNode, sock_dir: str, seconds: float, c_binary: str | None = None) -> list[harness.Report]:
    cfg = f.node.config["sockets"]
    return [run_socket(f, "agent-socket", cfg["agent"], agent_methods(f), seconds),
            run_socket(f, "cni-socket", cfg["cni"], cni_methods(f), seconds),
            run_socket(f, "dataplane-socket", cfg["dataplane"], dataplane_methods(f), seconds),
            run_cni_client(f, sock_dir, seconds)] + (
                [run_cni_client(f, sock_dir, seconds, c_binary)] if c_binary else [])
