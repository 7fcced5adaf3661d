"""The local API's limits (api.* config keys): request size, connections, idle clients, rate, and
framing edge cases (half-closed and slow clients, deep nesting). In-process server, real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from novanet_core.api.client import ApiClient
from novanet_core.api.protocol import ApiError
from novanet_core.api.router import ApiRouter
from novanet_core.api.server import ApiServer, Limits


def _router(release: threading.Event | None = None) -> ApiRouter:
    r = ApiRouter()
    r.add("echo", lambda p: p)
    r.add("hold", lambda p: (release.wait(30) if release else None, "released")[1])
    return r


@pytest.fixture
def serve(tmp_path):
    started: list[ApiServer] = []

    def make(limits: Limits, router: ApiRouter | None = None) -> ApiServer:
        srv = ApiServer(str(tmp_path / f"s{len(started)}.sock"), router or _router(), root_only=False, limits=limits)
        srv.start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


def _conn(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    return s


def _lines(s: socket.socket) -> list[dict]:
    f = s.makefile("rb")
    return [json.loads(line) for line in f]


def _req(i: int, method: str = "echo", **params: object) -> bytes:
    return json.dumps({"v": 1, "id": i, "method": method, "params": params}).encode() + b"\n"


def test_oversized_request_is_refused_and_the_connection_closed(serve):
    srv = serve(Limits(max_request_bytes=4096))
    s = _conn(srv.path)
    s.sendall(_req(1, pad="x" * 10000) + _req(2))
    out = _lines(s)  # the server closes after answering: the rest of the long line is not a request
    assert [o["error"]["code"] for o in out] == ["request_too_large"]
    assert "api.maxRequestBytes" in out[0]["error"]["message"]
    with ApiClient(srv.path) as c:  # and serves the next caller
        assert c.call("echo", {"a": 1}) == {"a": 1}
    assert srv.stats()["refused"]["request_too_large"] == 1


def test_connections_beyond_the_limit_are_answered_and_closed(serve):
    release = threading.Event()
    srv = serve(Limits(max_connections=2), _router(release))
    held = [_conn(srv.path) for _ in range(2)]
    for i, s in enumerate(held):
        s.sendall(_req(i, "hold"))
    deadline = time.monotonic() + 10
    while srv.stats()["connections"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    extra = _conn(srv.path)
    extra.sendall(_req(9))
    assert [o["error"]["code"] for o in _lines(extra)] == ["too_many_connections"]
    release.set()
    for s in held:
        assert json.loads(s.makefile("rb").readline())["result"] == "released"
        s.close()
    while srv.stats()["connections"] > 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with ApiClient(srv.path) as c:
        assert c.call("echo") == {}


def test_idle_connection_is_closed_and_the_client_reconnects(serve):
    srv = serve(Limits(idle_timeout=0.3))
    s = _conn(srv.path)
    s.sendall(b'{"v": 1, "id": 1, "meth')  # never completed
    assert s.recv(100) == b""  # closed by the server, not left holding a thread
    with ApiClient(srv.path) as c:
        assert c.call("echo", {"n": 1}) == {"n": 1}
        deadline = time.monotonic() + 10
        while srv.stats()["refused"].get("idle_timeout", 0) < 2:  # our kept-open connection timed out too
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.call("echo", {"n": 2}) == {"n": 2}  # reconnected transparently


def test_rate_limit_refuses_then_recovers(serve):
    srv = serve(Limits(requests_per_second=2, burst=3))
    s = _conn(srv.path)
    s.sendall(b"".join(_req(i) for i in range(6)))
    f = s.makefile("rb")
    out = [json.loads(f.readline()) for _ in range(6)]
    codes = [o.get("error", {}).get("code", "ok") for o in out]
    assert codes[:3] == ["ok"] * 3 and "rate_limited" in codes[3:]
    limited = next(o for o in out if "error" in o)
    assert limited["error"]["details"]["retryAfterSeconds"] > 0 and limited["id"] >= 3
    deadline = time.monotonic() + 10
    while True:  # tokens come back: the same connection is served again
        s.sendall(_req(100))
        o = json.loads(f.readline())
        if "result" in o:
            break
        assert time.monotonic() < deadline, o
        time.sleep(o["error"]["details"]["retryAfterSeconds"])
    s.close()


def test_half_closed_slow_and_nested_requests(serve):
    srv = serve(Limits())
    s = _conn(srv.path)
    s.sendall(json.dumps({"v": 1, "id": 5, "method": "echo", "params": {"h": 1}}).encode())  # no newline
    s.shutdown(socket.SHUT_WR)
    assert _lines(s) == [{"v": 1, "id": 5, "result": {"h": 1}}]
    s = _conn(srv.path)
    for b in _req(6, k="v"):  # one byte at a time
        s.sendall(bytes([b]))
        time.sleep(0.001)
    assert json.loads(s.makefile("rb").readline())["result"] == {"k": "v"}
    s.sendall(b"[" * 100000 + b"\n" + _req(7))
    f = s.makefile("rb")
    err = json.loads(f.readline())
    assert err["error"]["code"] == "bad_request"
    assert json.loads(f.readline())["id"] == 7  # and the connection goes on


def test_socket_is_created_private(serve):
    import os
    import stat

    srv = serve(Limits())
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600


def test_unknown_method_names_are_not_echoed_whole(serve):
    srv = serve(Limits())
    with ApiClient(srv.path) as c, pytest.raises(ApiError) as ei:
        c.call("x" * 5000)
    assert ei.value.code == "unknown_method" and len(ei.value.message) < 200


def test_the_agents_dataplane_client_backs_off_instead_of_failing(serve):
    """Found by the endpoints-map-full test: the agent's reconcile of a full map hit the
    dataplane's rate limit, and the rate_limited error killed the agent's dataplane monitor."""
    from novanet_core.agent.dataplane_client import DataplaneClient

    srv = serve(Limits(requests_per_second=50, burst=2))
    c = DataplaneClient(srv.path)
    try:
        assert [c.call("echo", {"i": i}) for i in range(10)] == [{"i": i} for i in range(10)]
    finally:
        c.close()
    assert srv.stats()["refused"].get("rate_limited", 0) > 0  # it was limited, and waited its turn


def test_whitespace_only_lines_are_skipped_without_an_answer(serve):
    """A line of only whitespace (``\\r\\n``, a keep-alive) gets no answer; the lines around it do.
    The fuzz harness once waited for an answer to such a line (its 218th case, ``0\\r\\n\\r\\n``)."""
    srv = serve(Limits())
    s = _conn(srv.path)
    s.sendall(b"0\r\n\r\n \t\n" + _req(7))
    s.shutdown(socket.SHUT_WR)
    answers = _lines(s)
    assert [a.get("id") for a in answers] == [None, 7]
    assert answers[0]["error"]["code"] == "bad_request"
    assert answers[1]["result"] == {}
