"""CNI spec conformance of NovaNet's CNI clients against a real agent in a real node namespace.

Every test runs against each client of ``tests/support/cni_clients.py``: the Python reference,
the static C binary, and the binary ``novanet install-cni`` installed, executed in a mount
namespace with no Python in it. The installed binary runs the whole suite at every cniVersion
(0.3.0 ... 1.1.0); the other two at the conflist's version and the latest. Each case checks the
exit code, the JSON on stdout, that an error carries the request's cniVersion, and that stderr
has no traceback. One node per client serves all its cases (each case DELs what it added).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from novanet_core.cni.install import CONFLIST_VERSION
from novanet_core.cni.versions import SUPPORTED_VERSIONS, version_tuple
from tests.support.cni_clients import CLIENTS, conflist_plugins, isolated_argv, use_client
from tests.support.node import NodeUnderTest, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]

CASES = [("installed", v) for v in SUPPORTED_VERSIONS] + [
    (c, v) for c in CLIENTS if c != "installed" for v in sorted({CONFLIST_VERSION, "1.1.0"})]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    explicit = any("case" in m.args[0] for m in metafunc.definition.iter_markers("parametrize"))
    if "cni" in metafunc.fixturenames and not explicit:
        metafunc.parametrize("case", CASES, ids=[f"{c}-{v}" for c, v in CASES])


def pod_ip(netns: str) -> str | None:
    out = sh("nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "eth0", check=False).stdout
    if not out:
        return None
    addrs = [a["local"] for i in json.loads(out) for a in i.get("addr_info", []) if a["family"] == "inet"]
    return addrs[0] if addrs else None


def has(version: str, command: str) -> bool:
    """Whether the spec version has the command (libcni's skel refuses it otherwise, with code 1)."""
    need = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}.get(command, (0, 0, 0))
    return version_tuple(version) >= need


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """One started node per client, created when first asked for."""
    made: dict[str, NodeUnderTest] = {}

    def get(client: str) -> NodeUnderTest:
        if client not in made:
            node = NodeUnderTest(datapath="kernel")
            made[client] = node
            node.start()
            use_client(node, client, tmp_path_factory.mktemp(f"cni-{client}"))
        return made[client]

    try:
        yield get
    finally:
        for node in made.values():
            node.close()


class Cni:
    """One client at one cniVersion on a shared node; remembers what to undo."""

    def __init__(self, node: NodeUnderTest, client: str, version: str):
        self.node, self.client, self.version = node, client, version
        self.added: list[tuple[str, str]] = []
        self.netns: list[str] = []

    def __call__(self, command: str, cid: str = "", netns: str = "", **kw: Any) -> tuple[int, Any]:
        self.node.cni_version = self.version
        rc, out = self.node.cni(command, cid, netns, **kw)
        assert "Traceback" not in self.node.last_stderr, self.node.last_stderr
        if rc != 0:
            assert isinstance(out, dict) and out.get("cniVersion"), f"error without JSON: {out!r}"
        if command == "ADD" and rc == 0:
            self.added.append((cid, netns))
        return rc, out

    def cid(self, tag: str = "") -> str:
        return (tag + uuid.uuid4().hex)[:24]

    def pod(self) -> str:
        name = f"nvt-q{self.node.id}-{uuid.uuid4().hex[:6]}"
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        return f"/run/netns/{name}"

    def ips(self) -> set[str]:
        return {a["address"] for a in self.node.call("ipam.list")}

    def cleanup(self) -> None:
        if self.node.procs["agent"].poll() is not None:
            self.node.restart("agent")
        self.node.wait_ready()
        for cid, ns in self.added:
            self.node.cni_version = "1.1.0"
            self.node.cni("DEL", cid, ns)
        for name in self.netns:
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def cni(nodes, case):
    client, version = case
    c = Cni(nodes(client), client, version)
    try:
        yield c
    finally:
        c.cleanup()


def addr(out: dict[str, Any]) -> str:
    return out["ips"][0]["address"].split("/")[0]


def test_version_lists_supported_versions(cni):
    rc, out = cni("VERSION", stdin=json.dumps({"cniVersion": cni.version}))
    assert rc == 0
    assert out == {"cniVersion": cni.version, "supportedVersions": SUPPORTED_VERSIONS}
    assert cni("VERSION", stdin="")[1]["cniVersion"] == "1.1.0"


def test_add_returns_the_requested_versions_result_and_configures_the_pod(cni):
    ns = cni.pod()
    rc, out = cni("ADD", cni.cid(), ns, args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
    assert rc == 0, out
    assert out["cniVersion"] == cni.version
    ip = out["ips"][0]
    assert ip["address"].endswith("/32") and ip["address"].startswith("10.42.7.")
    assert ip["gateway"] == "10.42.7.1"
    host, pod = out["interfaces"]
    assert out["interfaces"][ip["interface"]]["sandbox"] == ns
    assert host["name"].startswith("nv") and "sandbox" not in host
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.42.7.1"}]
    if cni.version.startswith("0."):
        # libcni's types040: IP version added, interfaces carry name/mac/sandbox only, dns always there
        assert ip["version"] == "4"
        assert set(pod) == {"name", "mac", "sandbox"}
        assert out["dns"] == {}
    else:
        assert "version" not in ip and "dns" not in out
        assert set(pod) == {"name", "mac", "mtu", "sandbox"} and pod["mtu"] >= 576
    assert pod_ip(ns) == addr(out)


def test_two_pods_reach_each_other(cni):
    a, b = cni.pod(), cni.pod()
    assert cni("ADD", cni.cid(), a)[0] == 0
    rc, out = cni("ADD", cni.cid(), b)
    assert rc == 0
    r = sh("nsenter", f"--net={a}", "ping", "-c", "2", "-W", "2", addr(out), check=False)
    assert r.returncode == 0, r.stdout


def test_second_add_without_del_is_an_error_and_keeps_the_first(cni):
    ns, cid = cni.pod(), cni.cid()
    rc, out = cni("ADD", cid, ns)
    assert rc == 0
    rc2, err = cni("ADD", cid, ns)
    assert rc2 == 1 and err["code"] >= 100 and "already" in err["msg"] and err["cniVersion"] == cni.version
    assert pod_ip(ns) == addr(out)
    rc3, err3 = cni("CHECK", cid, ns, conf={"prevResult": out})
    assert (rc3, err3) == (0, None) if has(cni.version, "CHECK") else (rc3 == 1 and err3["code"] == 1)


def test_del_is_idempotent_and_releases_the_ip(cni):
    ns, cid = cni.pod(), cni.cid()
    rc, out = cni("ADD", cid, ns)
    assert addr(out) in cni.ips()
    for _ in range(3):
        assert cni("DEL", cid, ns, conf={"prevResult": out}) == (0, None)
    assert addr(out) not in cni.ips()
    assert cni("DEL", cni.cid("never"), ns) == (0, None)


def test_del_succeeds_when_the_netns_is_already_gone(cni):
    ns, cid = cni.pod(), cni.cid()
    rc, out = cni("ADD", cid, ns)
    sh("ip", "netns", "del", os.path.basename(ns))
    assert cni("DEL", cid, "") == (0, None)
    assert addr(out) not in cni.ips()


def test_check_after_add_passes_and_after_del_fails(cni):
    ns, cid = cni.pod(), cni.cid()
    rc, out = cni("ADD", cid, ns)
    if not has(cni.version, "CHECK"):
        rc, err = cni("CHECK", cid, ns, conf={"prevResult": out})
        assert rc == 1 and err["code"] == 1 and "does not allow CHECK" in err["msg"]
        return
    assert cni("CHECK", cid, ns, conf={"prevResult": out}) == (0, None)
    cni("DEL", cid, ns, conf={"prevResult": out})
    rc, err = cni("CHECK", cid, ns, conf={"prevResult": out})
    assert rc == 1 and err["code"] == 3 and err["cniVersion"] == cni.version


def test_check_detects_a_removed_address(cni):
    ns, cid = cni.pod(), cni.cid()
    rc, out = cni("ADD", cid, ns)
    sh("nsenter", f"--net={ns}", "ip", "addr", "flush", "dev", "eth0")
    rc, err = cni("CHECK", cid, ns, conf={"prevResult": out})
    if has(cni.version, "CHECK"):
        assert rc == 1 and err["code"] == 104 and "lacks address" in err["msg"]
    else:
        assert rc == 1 and err["code"] == 1


BAD_INPUT = [
    # (env changes, stdin (None: a good config at the case's version), code, words, error's cniVersion)
    ({"CNI_CONTAINERID": None}, None, 4, "CNI_CONTAINERID", "1.1.0"),
    ({"CNI_NETNS": None, "CNI_IFNAME": None}, None, 4, "CNI_IFNAME, CNI_NETNS", "1.1.0"),
    ({"CNI_COMMAND": "BOGUS"}, None, 4, "got 'BOGUS'", "1.1.0"),
    ({"CNI_CONTAINERID": "-bad"}, None, 4, "CNI_CONTAINERID '-bad'", "1.1.0"),
    ({"CNI_IFNAME": "a/b"}, None, 4, "CNI_IFNAME 'a/b'", "1.1.0"),
    ({"CNI_IFNAME": "x" * 16}, None, 4, "is not a valid interface name", "1.1.0"),
    ({"CNI_ARGS": "A=1;B"}, None, 4, "CNI_ARGS entry 'B'", "1.1.0"),
    ({}, "{not json", 6, "not valid JSON", "1.1.0"),
    ({}, "", 6, "not valid JSON", "1.1.0"),
    ({}, '{"cniVersion": "9.0.0", "name": "n", "type": "novanet-cni"}', 1, "not supported", "1.1.0"),
    ({}, '{"cniVersion": "VER", "type": "novanet-cni"}', 7, "name", "VER"),
    ({}, '{"cniVersion": "VER", "name": "n", "type": "novanet-cni", "mtu": 10}', 7, "mtu", "VER"),
    ({}, '{"cniVersion": "VER", "name": "n", "type": "novanet-cni", "mtu": 1500.0}', 7, "mtu", "VER"),
    ({}, '{"cniVersion": "VER", "name": "n", "type": "novanet-cni", "agentSocket": "rel"}', 7, "agentSocket", "VER"),
    ({}, '{"cniVersion": "VER", "name": "n", "type": "novanet-cni", "agentTimeout": 0}', 7, "agentTimeout", "VER"),
    ({}, '{"cniVersion": "VER", "name": "", "type": "novanet-cni"}', 7, "name", "VER"),
    ({}, '{"cniVersion": 1, "name": "n", "type": "novanet-cni"}', 7, "cniVersion", "1.1.0"),
    ({}, '[1, 2]', 7, "JSON object", "1.1.0"),
]


@pytest.mark.parametrize(("env", "stdin", "code", "words", "err_version"), BAD_INPUT,
                         ids=[f"{i}-{b[3][:20]}" for i, b in enumerate(BAD_INPUT)])
def test_bad_input_gets_spec_error_json_and_no_traceback(cni, env, stdin, code, words, err_version):
    ns = cni.pod()
    base = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cni.cid("bad"), "CNI_NETNS": ns, "CNI_IFNAME": "eth0"}
    base.update(env)
    if stdin is None:
        stdin = json.dumps({"cniVersion": cni.version, "name": "n", "type": "novanet-cni",
                            "agentSocket": cni.node.config["sockets"]["cni"]})
    stdin = stdin.replace("VER", cni.version)
    rc, err = cni(base["CNI_COMMAND"] or "", base["CNI_CONTAINERID"] or "", base["CNI_NETNS"] or "",
                  ifname=base["CNI_IFNAME"] or "", stdin=stdin,
                  env_override={k: v for k, v in env.items() if v is not None and k != "CNI_IFNAME"}, args="")
    assert rc == 1
    assert err["code"] == code and words in err["msg"] + err.get("details", ""), err
    assert err["cniVersion"] == err_version.replace("VER", cni.version)


def test_check_without_prev_result_is_invalid_config(cni):
    rc, err = cni("CHECK", cni.cid(), cni.pod())
    assert rc == 1 and err["code"] == (7 if has(cni.version, "CHECK") else 1)
    assert ("prevResult" if has(cni.version, "CHECK") else "does not allow CHECK") in err["msg"]


def test_status_ok_when_ready(cni):
    rc, out = cni("STATUS")
    if has(cni.version, "STATUS"):
        assert (rc, out) == (0, None)
    else:
        assert rc == 1 and out["code"] == 1 and "does not allow STATUS" in out["msg"]


def test_agent_down_gives_status_50_add_11_and_deferred_del(cni):
    ns, cid = cni.pod(), cni.cid()
    rc, out = cni("ADD", cid, ns)
    cni.node.kill("agent")
    if has(cni.version, "STATUS"):
        rc, err = cni("STATUS")
        assert rc == 1 and err["code"] == 50 and "not reachable" in err["msg"]
    rc, err = cni("ADD", cni.cid(), cni.pod())
    assert rc == 1 and err["code"] == 11 and "try again later" in err["msg"]
    # DEL while the agent is down succeeds and is carried out when it returns.
    assert cni("DEL", cid, ns) == (0, None)
    tomb = Path(cni.node.config["sockets"]["cni"]).parent / "pending-del" / f"{cid}_eth0.json"
    assert json.loads(tomb.read_text())["containerID"] == cid
    cni.node.restart("agent")
    cni.node.wait_ready()
    assert addr(out) not in cni.ips()
    assert cid not in {e["containerID"] for e in cni.node.call("endpoints.list")}
    assert not tomb.exists()


class SilentAgent:
    """A CNI socket that accepts and reads but never answers (a hung agent)."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()
        os.unlink(self.path)


def test_a_hung_agent_times_out_into_the_agent_down_answers(cni):
    run_dir = Path(cni.node.config["sockets"]["cni"]).parent
    sub = run_dir / f"hung{uuid.uuid4().hex[:6]}"
    sub.mkdir()
    hung = SilentAgent(str(sub / "cni.sock"))
    try:
        conf = {"agentSocket": hung.path, "agentTimeout": 0.5}
        rc, err = cni("ADD", cni.cid(), cni.pod(), conf=conf)
        assert rc == 1 and err["code"] == 11 and err["msg"].endswith(f"{hung.path}: timed out")
        cid = cni.cid()
        assert cni("DEL", cid, "", conf=conf) == (0, None)
        assert json.loads((sub / "pending-del" / f"{cid}_eth0.json").read_text())["config"]["agentTimeout"] == 0.5
    finally:
        hung.close()


def test_gc_releases_attachments_not_listed(cni):
    keep, drop = cni.pod(), cni.pod()
    keep_id, drop_id = cni.cid("keep"), cni.cid("drop")
    _, out_keep = cni("ADD", keep_id, keep)
    _, out_drop = cni("ADD", drop_id, drop)
    others = [{"containerID": c, "ifname": "eth0"} for c in {e["containerID"] for e in cni.node.call("endpoints.list")}
              if c != drop_id]
    rc, out = cni("GC", conf={"cni.dev/valid-attachments": others}, ifname="")
    if not has(cni.version, "GC"):
        assert rc == 1 and out["code"] == 1 and "does not allow GC" in out["msg"]
        return
    assert (rc, out) == (0, None)
    ips = cni.ips()
    assert addr(out_keep) in ips and addr(out_drop) not in ips
    assert pod_ip(drop) is None and pod_ip(keep) is not None


@pytest.fixture
def tiny_pool_node(case, tmp_path):
    node = NodeUnderTest(datapath="kernel", pod_cidr="10.42.9.0/29")
    try:
        node.start()
        use_client(node, case[0], tmp_path)
        node.cni_version = case[1]
        yield node
    finally:
        node.close()


@pytest.mark.parametrize("case", [(c, "1.1.0") for c in CLIENTS], ids=list(CLIENTS))
def test_exhausted_pool_is_a_clear_plugin_error(tiny_pool_node):
    for i in range(5):  # a /29 has 5 assignable addresses after network, gateway and broadcast
        assert tiny_pool_node.cni("ADD", f"full{i}0000000", tiny_pool_node.add_pod_netns())[0] == 0
    rc, err = tiny_pool_node.cni("ADD", "full90000009", tiny_pool_node.add_pod_netns())
    assert rc == 1 and err["code"] == 110 and "exhausted" in err["msg"]
    rc, err = tiny_pool_node.cni("STATUS")
    assert rc == 1 and err["code"] == 50


def test_host_name_collision_is_refused_without_touching_the_other_pod(cni):
    a, b = cni.pod(), cni.pod()
    prefix = uuid.uuid4().hex[:11]
    rc, out = cni("ADD", prefix + "A1", a)
    assert rc == 0
    before = cni.ips()
    rc, err = cni("ADD", prefix + "B2", b)
    assert rc == 1 and err["code"] == 102 and f"already used by container {prefix}A1" in err["msg"]
    assert pod_ip(a) == addr(out)
    assert cni.ips() == before


# ---------------------------------------------------------------------------- the installed binary

PT_DYNAMIC, PT_INTERP = 2, 3


def program_header_types(elf: bytes) -> set[int]:
    assert elf[:4] == b"\x7fELF" and elf[4] == 2, "not a 64-bit ELF file"
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return {struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)}



@pytest.mark.parametrize("case", [("installed", CONFLIST_VERSION)], ids=["installed"])
def test_installed_binary_is_static_and_its_namespace_has_no_python(cni):
    bin_dir, conf_dir = cni.node.installed
    binary = bin_dir / "novanet-cni"
    # A static executable has no program interpreter (PT_INTERP, which names ld.so) and no
    # dynamic section (PT_DYNAMIC, the shared libraries it needs).
    assert program_header_types(binary.read_bytes()).isdisjoint({PT_INTERP, PT_DYNAMIC})
    assert binary.stat().st_mode & 0o111
    assert conflist_plugins(conf_dir) == ["novanet-cni", "portmap", "bandwidth"]
    listing = sh(*isolated_argv(cni.node, bin_dir, listing=True)).stdout.split()
    assert "/opt/cni/bin/novanet-cni" in listing
    assert not [p for p in listing if "python" in p or p.startswith(("/usr", "/opt/novanet", "/bin", "/lib"))]
    assert not [p for p in listing if ".venv" in p]
