"""The C client and the Python reference answer every input alike, byte for byte (fuzzed).

Both run with the same environment and stdin against an agent socket that does not exist, so
every path up to the agent is compared: environment checks, config checks at every version,
VERSION, the agent-down answers (ADD 11, STATUS 50) and the deferred DEL's tombstone. Only the
JSON parser's own wording of a decode error differs (the code and the message's start agree).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from novanet_core.cni.versions import SUPPORTED_VERSIONS
from tests.support.cni_clients import build_c_binary
from tests.support.node import BIN

PYTHON_CLIENT = BIN / "novanet-cni"


@pytest.fixture(scope="module")
def c_binary() -> Path:
    return build_c_binary()


@pytest.fixture(scope="module")
def sockdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("agree")  # holds no socket: the agent is "down"


def run(binary: Path, env: dict[bytes, bytes], stdin: bytes) -> tuple[int, bytes, bytes]:
    full = {b"PATH": os.environb.get(b"PATH", b"/usr/bin:/bin"), **env}
    p = subprocess.run([str(binary)], input=stdin, env=full, capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def compare(c_binary: Path, sockdir: Path, env: dict[bytes, bytes], stdin: bytes) -> None:
    tombs = sockdir / "pending-del"
    answers, tombstones = [], []
    for binary in (PYTHON_CLIENT, c_binary):
        rc, out, err = run(binary, env, stdin)
        assert b"Traceback" not in err, err.decode(errors="replace")
        answers.append((rc, out))
        found = sorted(tombs.glob("*.json")) if tombs.is_dir() else []
        tombstones.append([(f.name, json.loads(f.read_text())) for f in found])
        for f in found:
            f.unlink()
    (py_rc, py_out), (c_rc, c_out) = answers
    assert py_rc == c_rc, (answers, env, stdin)
    if py_out and json.loads(py_out).get("code") == 6:
        py, c = json.loads(py_out), json.loads(c_out)
        prefix = "network configuration on stdin is not valid JSON"
        assert c["code"] == 6 and py["msg"].startswith(prefix) and c["msg"].startswith(prefix)
        assert py["cniVersion"] == c["cniVersion"]
    else:
        assert py_out == c_out, (env, stdin)
    # The same request recorded (the C client forwards the config text; the values are equal).
    assert [(n, json.dumps(v)) for n, v in tombstones[0]] == [(n, json.dumps(v)) for n, v in tombstones[1]]


def env_text(alphabet: str = "") -> st.SearchStrategy[bytes]:
    chars = st.characters(codec="utf-8", exclude_characters="\x00") if not alphabet else st.sampled_from(alphabet)
    return st.one_of(
        st.text(chars, max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.binary(max_size=8).map(lambda b: b.replace(b"\x00", b"")),  # not UTF-8: decoded with U+FFFD
    )


ID = "abcXYZ019_.-"


@st.composite
def environments(draw: Any) -> dict[bytes, bytes]:
    env: dict[bytes, bytes] = {}
    cmd = draw(st.sampled_from(["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", "add", "", "BOGUS", None]))
    if cmd is not None:
        env[b"CNI_COMMAND"] = cmd.encode()
    for key, strat in ((b"CNI_CONTAINERID", st.one_of(st.text(ID, min_size=1, max_size=14).map(str.encode), env_text())),
                       (b"CNI_IFNAME", st.one_of(st.sampled_from([b"eth0", b"net1", b"x" * 16, b"a/b", b"..", b"."]),
                                                 env_text())),
                       (b"CNI_NETNS", st.sampled_from([b"/run/netns/x", b""])),
                       (b"CNI_ARGS", st.one_of(st.sampled_from([b"", b"A=1;B=2", b"K8S_POD_NAME=p;;X", b"A=1;A=2"]),
                                               env_text("AB=;x")))):
        if draw(st.integers(0, 5)):
            env[key] = draw(strat)
    return env


json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
json_any = st.recursive(json_leaf, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=5), i, max_size=3),
                        max_leaves=8)


@st.composite
def configs(draw: Any, sock: str) -> bytes:
    if draw(st.integers(0, 12)) == 0:
        return draw(st.binary(max_size=20))
    conf: dict[str, Any] = {}
    fields = {
        "cniVersion": st.sampled_from([*SUPPORTED_VERSIONS, "0.2.0", "9.9.9", "", "1.0.0\x00"]) | json_any,
        "name": st.sampled_from(["novanet", ""]) | json_any,
        "type": st.just("novanet-cni") | json_any,
        "agentSocket": st.sampled_from([sock, "relative", "/a\x00b"]) | json_leaf.filter(lambda v: not isinstance(v, str)),
        "mtu": st.sampled_from([1500, 575, 576, 9000, 9001, 1500.0, True, "1500", None, -0, 10**30]),
        "agentTimeout": st.sampled_from([1, 0, -1, 0.5, 3600, 3601, True, None, "5", float("nan"), float("inf")]),
        "prevResult": st.sampled_from([{"ips": []}, [], None, "x"]),
        "cni.dev/valid-attachments": st.sampled_from([[], [{"containerID": "a"}], [{"ifname": "x"}], {}, [1]]),
        "extra": json_any,
    }
    for key, strat in fields.items():
        if key == "agentSocket" or draw(st.integers(0, 3)):
            conf[key] = draw(strat)
    text = json.dumps(conf, indent=draw(st.sampled_from([None, 2])), ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
@example(data=None)
def test_c_client_answers_like_the_reference(c_binary, sockdir, data):
    sock = str(sockdir / "cni.sock")
    if data is None:  # the plain agent-down ADD
        env = {b"CNI_COMMAND": b"ADD", b"CNI_CONTAINERID": b"c1", b"CNI_IFNAME": b"eth0", b"CNI_NETNS": b"/x"}
        stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "t", "agentSocket": sock}).encode()
    else:
        env, stdin = data.draw(environments()), data.draw(configs(sock))
    compare(c_binary, sockdir, env, stdin)


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_command_at_every_version_alike(c_binary, sockdir, command, version):
    env = {b"CNI_COMMAND": command.encode(), b"CNI_CONTAINERID": b"agree1", b"CNI_IFNAME": b"eth0",
           b"CNI_NETNS": b"/run/netns/x", b"CNI_ARGS": b"K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"}
    conf = {"cniVersion": version, "name": "novanet", "type": "novanet-cni", "agentSocket": str(sockdir / "cni.sock"),
            "prevResult": {"cniVersion": version, "ips": [{"address": "10.0.0.2/32"}]}}
    compare(c_binary, sockdir, env, json.dumps(conf).encode())
