"""Lab spec parsing and validation: every error names the field path (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from novanet_lab.errors import LabError
from novanet_lab.nodeconfig import node_config
from novanet_lab.paths import LabPaths
from novanet_lab.spec import load_spec, load_spec_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = """
cluster: {clusterCIDR: 10.42.0.0/16}
nodes: [{name: node-1}]
namespaces: [{name: x, labels: {ns: x}}]
pods:
  - {name: a, namespace: x, labels: {pod: a}, ports: [{name: serve-80-tcp, port: 80, protocol: TCP}]}
"""


def error_of(text: str) -> str:
    with pytest.raises(LabError) as e:
        load_spec_text(text, "t.yaml")
    return str(e.value)


@pytest.mark.parametrize("name", ["lab-1node.yaml", "lab-netpol.yaml", "lab-3node.yaml"])
def test_examples_parse(name: str) -> None:
    spec = load_spec(EXAMPLES / name)
    assert spec.nodes and spec.pods


def test_netpol_example_is_the_e2e_model() -> None:
    spec = load_spec(EXAMPLES / "lab-netpol.yaml")
    assert {(p.namespace, p.name) for p in spec.pods} == {(n, p) for n in "xyz" for p in "abc"}
    assert {ns.name: ns.labels for ns in spec.namespaces} == {n: {"ns": n} for n in "xyz"}
    for p in spec.pods:
        assert p.labels == {"pod": p.name}
        assert {(x.name, x.port, x.protocol) for x in p.ports} == {
            (f"serve-{port}-{proto.lower()}", port, proto) for port in (80, 81) for proto in ("TCP", "UDP")
        }


def test_defaults() -> None:
    spec = load_spec_text(BASE)
    assert spec.name == "novanet"
    assert spec.underlay.cidr == "172.30.0.0/24" and spec.underlay.mtu == 1500
    assert spec.cluster.routingMode == "overlay" and spec.cluster.tunnelProtocol == "vxlan"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace("port: 80,", "port: 70000,"), "pods[0].ports[0].port"),
        (BASE.replace("protocol: TCP", "protocol: ICMP"), "pods[0].ports[0].protocol"),
        (BASE.replace("{name: node-1}", "{name: node-1, colour: red}"), "nodes[0].colour: unknown key"),
        (BASE.replace("namespace: x, labels: {pod", "namespace: q, labels: {pod"), "pods[0] (q/a).namespace: 'q' is not declared"),
        (BASE.replace("nodes: [{name: node-1}]", "nodes: [{name: node-1}, {name: node-1}]"), "nodes[1].name: 'node-1' is already used by nodes[0]"),
        (BASE.replace("nodes: [{name: node-1}]", "nodes: []"), "nodes: List should have at least 1 item"),
        (BASE.replace("cluster: {clusterCIDR: 10.42.0.0/16}", "cluster: {clusterCIDR: 10.42.0.1/16}"), "cluster.clusterCIDR"),
        (BASE.replace("cluster: {", "cluster: {sockets: {agent: /x}, "), "cluster.sockets: set by the lab"),
        (BASE.replace("cluster: {", "cluster: {bpf: {root: /sys/fs/bpf/x}, "), "cluster.bpf.root: set by the lab"),
        ("name: Bad_Name\n" + BASE, "name: 'Bad_Name' must be lower-case"),
        (BASE.replace("{name: a, namespace: x,", "{name: a, namespace: x, node: node-9,"), "pods[0] (x/a).node: 'node-9' is not one of the nodes"),
        (BASE.replace("ports: [", "ports: [{port: 80, protocol: TCP}, "), "pods[0] (x/a).ports[1]: 80/TCP is already declared by ports[0]"),
        (BASE.replace("{name: node-1}", "{name: node-1, podCIDR: 10.43.0.0/24}"), "nodes[0].podCIDR: 10.43.0.0/24 is not inside cluster.clusterCIDR"),
        ("- just\n- a list\n", "the top level must be a map"),
        ("cluster: [\n", "not valid YAML"),
        (BASE + "\nunderlay: {mtu: 100}\n", "underlay.mtu"),
    ],
)
def test_errors_name_the_field(text: str, expected: str) -> None:
    msg = error_of(text)
    assert expected in msg, msg
    assert "Traceback" not in msg


def test_missing_file() -> None:
    with pytest.raises(LabError, match="does not exist"):
        load_spec("/nonexistent/lab.yaml")


def test_node_config_contract() -> None:
    """The per-node config carries exactly the keys the agent contract names."""
    spec = load_spec_text("name: t1\n" + BASE.replace("cluster: {", "cluster: {datapath: kernel, mtu: 1400, policy: {defaultDeny: true}, "))
    paths = LabPaths("t1")
    cfg = node_config(spec, paths, "node-1", "172.30.0.2", "10.42.0.0/24")
    assert cfg["nodeName"] == "node-1" and cfg["nodeIP"] == "172.30.0.2" and cfg["podCIDR"] == "10.42.0.0/24"
    assert cfg["datapath"] == "kernel" and cfg["mtu"] == 1400 and cfg["policy"] == {"defaultDeny": True}
    assert cfg["ipam"]["dataDir"] == "/var/lib/novanet-lab/t1/node-1/networks/novanet"
    assert cfg["bpf"]["root"] == "/sys/fs/bpf/novanet-lab/t1/node-1"
    assert cfg["sockets"] == {k: f"/run/novanet-lab/t1/node-1/{k}.sock" for k in ("agent", "cni", "dataplane")}
    assert cfg["stateSource"] == {"type": "manifests", "path": "/var/lib/novanet-lab/t1/manifests"}
    # both daemons serve /metrics on the node address, for a Prometheus on the underlay
    assert cfg["metrics"] == {"address": "172.30.0.2:9103", "dataplaneAddress": "172.30.0.2:9104"}


def test_node_config_default_datapath_is_left_to_the_agent() -> None:
    cfg = node_config(load_spec_text(BASE), LabPaths("t1"), "node-1", "172.30.0.2", "10.42.0.0/24")
    assert "datapath" not in cfg


def test_passthrough_keys_are_checked_against_novanet_config() -> None:
    spec = load_spec_text(BASE.replace("cluster: {", "cluster: {mtu: 99999, frobnicate: 1, "))
    with pytest.raises(LabError) as e:
        node_config(spec, LabPaths("t1"), "node-1", "172.30.0.2", "10.42.0.0/24")
    assert "cluster.mtu" in str(e.value) and "cluster.frobnicate: unknown NovaNet config key" in str(e.value)


def test_socket_paths_fit_sun_path() -> None:
    # Longest lab and node names still give unix socket paths under the 108-byte limit.
    paths = LabPaths("l" * 32)
    assert len(str(paths.socket("n" * 32, "dataplane"))) < 108


def test_frr_only_for_a_routing_backend_that_drives_it() -> None:
    from novanet_lab import podroutes

    native = BASE.replace("cluster: {clusterCIDR: 10.42.0.0/16}", "cluster: {clusterCIDR: 10.42.0.0/16, routingMode: native}")
    assert podroutes.uses_frr(load_spec_text(native, "t.yaml"))
    hostgw = native.replace("routingMode: native}", "routingMode: native, routing: {type: hostgw}}")
    assert not podroutes.uses_frr(load_spec_text(hostgw, "t.yaml"))
    assert not podroutes.uses_frr(load_spec_text(BASE, "t.yaml"))
    err = error_of(hostgw + "routers: [{name: tor, asn: 65000}]\n")
    assert "routers: they speak BGP" in err and "frr-bgp" in err and "'hostgw'" in err
