"""The control plane's locks, against real daemons and a real unprivileged user.

* every socket is 0600 and root-owned, so another user cannot even connect;
* if its mode is loosened anyway, the daemon's SO_PEERCRED check still refuses the caller;
* the CNI socket serves only CNI methods, and the control socket none of them;
* nothing the daemons wrote (run dir, state, IPAM, records, bpffs) is world-writable, even when
  they were started with umask 0.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from novanet_core.api.client import ApiClient
from novanet_core.api.protocol import ApiError
from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

NOBODY = 65534
# Runs as the unprivileged user: connect, send one request, print what happened as JSON.
_PROBE = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect_error": e.errno})); sys.exit(0)
s.sendall(b'{"v": 1, "id": 42, "method": "status", "params": {}}\n')
print(json.dumps({"answer": json.loads(s.makefile("rb").readline())}))
"""


@pytest.fixture(scope="module")
def node() -> Iterator[NodeUnderTest]:
    n = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.14.0/24")
    old = os.umask(0)  # the worst a runtime could hand the daemons
    try:
        n.start(wait=120)
    finally:
        os.umask(old)
    try:
        ns = n.add_pod_netns()
        rc, out = n.cni("ADD", f"secpod0{n.id}", ns)
        assert rc == 0, out
        yield n
    finally:
        n.close()


def _as_nobody(path: str) -> dict:
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                        "-c", _PROBE, path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _sockets(n: NodeUnderTest) -> dict[str, str]:
    return dict(n.config["sockets"])


def test_sockets_are_root_only_files(node: NodeUnderTest) -> None:
    for name, path in _sockets(node).items():
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, f"{name}: {oct(st.st_mode)} uid {st.st_uid}"
        # the directories on the way are traversable, so it is the socket's own mode that stops nobody
        assert _as_nobody(path) == {"connect_error": 13}, name  # EACCES


def test_a_loosened_socket_still_refuses_non_root_peers(node: NodeUnderTest) -> None:
    for name, path in _sockets(node).items():
        os.chmod(path, 0o666)
        try:
            out = _as_nobody(path)
        finally:
            os.chmod(path, 0o600)
        assert out["answer"]["error"]["code"] == "permission_denied", (name, out)
        assert out["answer"]["id"] == 42
    assert node.call("status")["ready"]  # and root is still served


def test_cni_socket_serves_only_cni_methods(node: NodeUnderTest) -> None:
    with ApiClient(node.config["sockets"]["cni"]) as c:
        with pytest.raises(ApiError) as ei:
            c.call("status")
        assert ei.value.code == "unknown_method"
        assert sorted(ei.value.details["methods"]) == ["cni.add", "cni.check", "cni.del", "cni.gc", "cni.status"]
        with pytest.raises(ApiError) as ei:
            c.call("dataplane.call", {"method": "dp.status"})
        assert ei.value.code == "unknown_method"
    with ApiClient(node.config["sockets"]["agent"]) as c:
        with pytest.raises(ApiError) as ei:
            c.call("cni.add", {"containerID": "x", "ifname": "eth0", "netns": "/x"})
        assert ei.value.code == "unknown_method"


def written_paths(n: NodeUnderTest) -> list[Path]:
    # What the daemons create: the run dir (sockets, agent state, endpoint records), the IPAM
    # directory and the bpffs root. The node dir itself holds the test's own config and logs.
    roots = [n.run, Path(n.config["ipam"]["dataDir"]), Path(n.config["bpf"]["root"])]
    out = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                out.append(Path(dirpath) / name)
            out.append(Path(dirpath))
    return out


def world_writable(paths: list[Path]) -> list[str]:
    bad = []
    for p in paths:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue  # removed while walking (a temp file)
        if stat.S_ISLNK(st.st_mode):
            continue
        if st.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
            bad.append(f"{p} {oct(stat.S_IMODE(st.st_mode))}")
    return bad


def test_nothing_the_daemons_write_is_world_writable(node: NodeUnderTest) -> None:
    paths = written_paths(node)
    assert len(paths) > 10  # sockets, state, IPAM files, endpoint records, pins
    assert {p.name for p in paths} >= {"cni.sock", "dataplane.sock", "novanet.sock", "lock"}
    assert world_writable(paths) == []
