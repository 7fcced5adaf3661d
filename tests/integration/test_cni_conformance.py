"""CNI spec 1.1 conformance of ``novanet-cni`` against a real agent in a real node namespace.

Every command, the error codes of the spec, and no tracebacks: each case checks the exit code,
the JSON on stdout, and that stderr stays free of Python tracebacks.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.node import BIN, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]


def pod_ip(netns: str) -> str | None:
    out = sh("nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "eth0", check=False).stdout
    if not out:
        return None
    addrs = [a["local"] for i in json.loads(out) for a in i.get("addr_info", []) if a["family"] == "inet"]
    return addrs[0] if addrs else None


def test_version_lists_supported_versions(kernel_node):
    rc, out = kernel_node.cni("VERSION", stdin='{"cniVersion":"1.0.0"}')
    assert rc == 0
    assert out["cniVersion"] == "1.0.0"
    assert set(out["supportedVersions"]) >= {"0.3.1", "0.4.0", "1.0.0", "1.1.0"}


def test_add_returns_spec_result_and_configures_the_pod(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "c0ffee000001", ns, args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
    assert rc == 0, out
    assert out["cniVersion"] == "1.1.0"
    ip = out["ips"][0]["address"]
    assert ip.endswith("/32") and ip.startswith("10.42.7.")
    assert out["ips"][0]["gateway"] == "10.42.7.1"
    assert out["interfaces"][out["ips"][0]["interface"]]["sandbox"] == ns
    assert pod_ip(ns) == ip.split("/")[0]


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_add_answers_in_the_requested_version(kernel_node, version):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", f"ver{version.replace('.', '')}00000", ns, conf={"cniVersion": version})
    assert rc == 0, out
    assert out["cniVersion"] == version
    if version < "1.0.0":
        assert out["ips"][0]["version"] == "4"


def test_two_pods_reach_each_other(kernel_node):
    a, b = kernel_node.add_pod_netns(), kernel_node.add_pod_netns()
    assert kernel_node.cni("ADD", "aaaaaaaaaaaa1", a)[0] == 0
    rc, out = kernel_node.cni("ADD", "bbbbbbbbbbbb1", b)
    assert rc == 0
    ip_b = out["ips"][0]["address"].split("/")[0]
    r = sh("nsenter", f"--net={a}", "ping", "-c", "2", "-W", "1", ip_b, check=False)
    assert r.returncode == 0, r.stdout


def test_second_add_without_del_is_an_error_and_keeps_the_first(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "dup000000001", ns)
    assert rc == 0
    ip = out["ips"][0]["address"].split("/")[0]
    rc2, err = kernel_node.cni("ADD", "dup000000001", ns)
    assert rc2 == 1 and err["code"] >= 100 and "already" in err["msg"]
    assert pod_ip(ns) == ip
    assert kernel_node.cni("CHECK", "dup000000001", ns, conf={"prevResult": out})[0] == 0


def test_del_is_idempotent_and_releases_the_ip(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "del000000001", ns)
    ip = out["ips"][0]["address"].split("/")[0]
    assert ip in {a["address"] for a in kernel_node.call("ipam.list")}
    for _ in range(3):
        rc, out2 = kernel_node.cni("DEL", "del000000001", ns, conf={"prevResult": out})
        assert rc == 0 and out2 is None
    assert ip not in {a["address"] for a in kernel_node.call("ipam.list")}
    assert kernel_node.cni("DEL", "neverexisted1", ns)[0] == 0


def test_del_succeeds_when_the_netns_is_already_gone(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "gone00000001", ns)
    ip = out["ips"][0]["address"].split("/")[0]
    sh("ip", "netns", "del", os.path.basename(ns))
    rc, _ = kernel_node.cni("DEL", "gone00000001", "")
    assert rc == 0
    assert ip not in {a["address"] for a in kernel_node.call("ipam.list")}


def test_check_after_add_passes_and_after_del_fails(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "chka00000001", ns)
    assert kernel_node.cni("CHECK", "chka00000001", ns, conf={"prevResult": out})[0] == 0
    kernel_node.cni("DEL", "chka00000001", ns, conf={"prevResult": out})
    rc, err = kernel_node.cni("CHECK", "chka00000001", ns, conf={"prevResult": out})
    assert rc == 1 and err["code"] == 3


def test_check_detects_a_removed_address(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "chkb00000002", ns)
    sh("nsenter", f"--net={ns}", "ip", "addr", "flush", "dev", "eth0")
    rc, err = kernel_node.cni("CHECK", "chkb00000002", ns, conf={"prevResult": out})
    assert rc == 1 and err["code"] == 104 and "lacks address" in err["msg"]


@pytest.mark.parametrize(
    ("env", "stdin", "code", "words"),
    [
        ({"CNI_CONTAINERID": None}, None, 4, "CNI_CONTAINERID"),
        ({"CNI_NETNS": None, "CNI_IFNAME": None}, None, 4, "CNI_IFNAME, CNI_NETNS"),
        ({"CNI_COMMAND": "BOGUS"}, None, 4, "CNI_COMMAND"),
        ({"CNI_CONTAINERID": "-bad"}, None, 4, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": "a/b"}, None, 4, "CNI_IFNAME"),
        ({}, "{not json", 6, "not valid JSON"),
        ({}, '{"cniVersion": "9.0.0", "name": "n", "type": "novanet-cni"}', 1, "not supported"),
        ({}, '{"cniVersion": "1.1.0", "type": "novanet-cni"}', 7, "name"),
        ({}, '{"cniVersion": "1.1.0", "name": "n", "type": "novanet-cni", "mtu": 10}', 7, "mtu"),
        ({}, '[1, 2]', 7, "JSON object"),
    ],
)
def test_bad_input_gets_spec_error_json_and_no_traceback(kernel_node, env, stdin, code, words):
    ns = kernel_node.add_pod_netns()
    base = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bad000000001", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
            "CNI_PATH": str(BIN), "PATH": os.environ["PATH"]}
    base.update(env)
    base = {k: v for k, v in base.items() if v is not None}
    if stdin is None:
        stdin = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "novanet-cni",
                            "agentSocket": kernel_node.config["sockets"]["cni"]})
    p = subprocess.run([str(BIN / "novanet-cni")], input=stdin, capture_output=True, text=True, env=base)
    assert p.returncode == 1
    err = json.loads(p.stdout)
    assert err["code"] == code and words in err["msg"] + err.get("details", "")
    assert "cniVersion" in err
    assert "Traceback" not in p.stderr


def test_check_without_prev_result_is_invalid_config(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, err = kernel_node.cni("CHECK", "chkc00000003", ns)
    assert rc == 1 and err["code"] == 7 and "prevResult" in err["msg"]


def test_status_ok_when_ready(kernel_node):
    assert kernel_node.cni("STATUS") == (0, None)


def test_agent_down_gives_status_50_add_11_and_deferred_del(kernel_node):
    ns = kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "downa0000001", ns)
    ip = out["ips"][0]["address"].split("/")[0]
    kernel_node.kill("agent")
    rc, err = kernel_node.cni("STATUS")
    assert rc == 1 and err["code"] == 50
    ns2 = kernel_node.add_pod_netns()
    rc, err = kernel_node.cni("ADD", "downb0000002", ns2)
    assert rc == 1 and err["code"] == 11
    # DEL while the agent is down succeeds and is carried out when it returns.
    assert kernel_node.cni("DEL", "downa0000001", ns)[0] == 0
    kernel_node.restart("agent")
    kernel_node.wait_ready()
    assert ip not in {a["address"] for a in kernel_node.call("ipam.list")}
    assert kernel_node.call("status")["endpoints"] == 0


def test_gc_releases_attachments_not_listed(kernel_node):
    keep, drop = kernel_node.add_pod_netns(), kernel_node.add_pod_netns()
    _, out_keep = kernel_node.cni("ADD", "gckeep000001", keep)
    _, out_drop = kernel_node.cni("ADD", "gcdrop000001", drop)
    rc, out = kernel_node.cni("GC", conf={"cni.dev/valid-attachments": [{"containerID": "gckeep000001", "ifname": "eth0"}]},
                              ifname="")
    assert rc == 0 and out is None
    ips = {a["address"] for a in kernel_node.call("ipam.list")}
    assert out_keep["ips"][0]["address"].split("/")[0] in ips
    assert out_drop["ips"][0]["address"].split("/")[0] not in ips
    assert pod_ip(drop) is None and pod_ip(keep) is not None


@pytest.fixture
def tiny_pool_node():
    from tests.support.node import NodeUnderTest

    node = NodeUnderTest(datapath="kernel", pod_cidr="10.42.9.0/29")
    try:
        node.start()
        yield node
    finally:
        node.close()


def test_exhausted_pool_is_a_clear_plugin_error(tiny_pool_node):
    for i in range(5):  # a /29 has 5 assignable addresses after network, gateway and broadcast
        assert tiny_pool_node.cni("ADD", f"full{i}0000000", tiny_pool_node.add_pod_netns())[0] == 0
    rc, err = tiny_pool_node.cni("ADD", "full90000009", tiny_pool_node.add_pod_netns())
    assert rc == 1 and err["code"] == 110 and "exhausted" in err["msg"]
    rc, err = tiny_pool_node.cni("STATUS")
    assert rc == 1 and err["code"] == 50


def test_host_name_collision_is_refused_without_touching_the_other_pod(kernel_node):
    a, b = kernel_node.add_pod_netns(), kernel_node.add_pod_netns()
    rc, out = kernel_node.cni("ADD", "samepref000A1", a)
    assert rc == 0
    rc, err = kernel_node.cni("ADD", "samepref000B2", b)
    assert rc == 1 and err["code"] == 102 and "already used by container samepref000A1" in err["msg"]
    assert pod_ip(a) == out["ips"][0]["address"].split("/")[0]
    assert len(kernel_node.call("ipam.list")) == 1
