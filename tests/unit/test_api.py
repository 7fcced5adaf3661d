"""The local JSON API: framing, versioning, errors as data, streaming, root-only callers."""

from __future__ import annotations

import json
import os
import socket

import pytest

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from novanet_core.api.router import ApiRouter
from novanet_core.api.server import ApiServer


@pytest.fixture
def server(tmp_path):
    r = ApiRouter()
    r.add("echo", lambda p: p)
    r.add("boom", lambda p: 1 / 0)
    r.add("denied", lambda p: (_ for _ in ()).throw(ApiError("invalid_params", "x: must be positive")))
    r.add("count", lambda p: iter(range(p["n"])), stream=True)
    path = str(tmp_path / "s.sock")
    srv = ApiServer(path, r)
    srv.start()
    yield path
    srv.stop()


def raw(path, line: bytes) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(line)
    data = s.makefile("rb").readline()
    s.close()
    return json.loads(data)


def test_roundtrip_and_stream(server):
    with ApiClient(server) as c:
        assert c.call("echo", {"a": 1}) == {"a": 1}
        assert list(c.stream("count", {"n": 3})) == [0, 1, 2]
        assert c.call("echo", {"again": True}) == {"again": True}  # connection reused after a stream


def test_errors_are_data_not_tracebacks(server):
    with ApiClient(server) as c:
        with pytest.raises(ApiError) as e:
            c.call("denied")
        assert e.value.code == "invalid_params" and "x: must be positive" in e.value.message
        with pytest.raises(ApiError) as e:
            c.call("boom")
        assert e.value.code == "internal" and "ZeroDivisionError" in e.value.message
        with pytest.raises(ApiError) as e:
            c.call("nope")
        assert e.value.code == "unknown_method" and "echo" in e.value.details["methods"]
        assert c.call("echo", {"still": "alive"}) == {"still": "alive"}


def test_bad_frames_and_versions(server):
    assert raw(server, b"{not json\n")["error"]["code"] == "bad_request"
    r = raw(server, b'{"v": 99, "id": 1, "method": "echo"}\n')
    assert r["error"]["code"] == "unsupported_version" and r["error"]["details"]["supported"] == [1]
    assert raw(server, b'{"v": 1, "id": 2, "method": "echo", "params": [1]}\n')["error"]["code"] == "invalid_params"


def test_socket_is_private_and_missing_socket_is_unreachable(server, tmp_path):
    assert oct(os.stat(server).st_mode & 0o777) == "0o600"
    with pytest.raises(Unreachable):
        ApiClient(str(tmp_path / "nobody.sock")).call("echo")


@pytest.mark.root
def test_non_root_callers_are_refused():
    import tempfile

    d = tempfile.mkdtemp(prefix="novanet-api-")
    os.chmod(d, 0o755)  # the caller must reach the socket for SO_PEERCRED to be what refuses it
    server = os.path.join(d, "s.sock")
    r = ApiRouter()
    r.add("echo", lambda p: p)
    srv = ApiServer(server, r)
    srv.start()
    try:
        _check_refused(server)
    finally:
        srv.stop()
        os.rmdir(d)


def _check_refused(server):
    pid = os.fork()
    if pid == 0:
        try:
            os.chmod(server, 0o666)
            os.setuid(65534)
            r = raw(server, b'{"v": 1, "id": 1, "method": "echo"}\n')
            os._exit(0 if r["error"]["code"] == "permission_denied" and r["id"] == 1 else 1)
        except BaseException:
            import traceback

            traceback.print_exc()  # to the test's captured stderr: say why, not just "2"
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
