"""Threaded unix-socket server for the local API, with SO_PEERCRED caller checks and limits.

Limits (config keys ``api.*``, docs/configuration.md): a request line longer than
``maxRequestBytes`` is answered ``request_too_large`` and the connection closed (the rest of the
line cannot be told from the next request); more than ``maxConnections`` connections at once get
``too_many_connections``; a connection with no complete request for ``idleTimeoutSeconds`` (or
that does not read its answers for that long) is closed; requests beyond ``requestsPerSecond``
(a token bucket ``requestBurst`` deep, shared by all connections of the socket) are answered
``rate_limited`` without being run. Every refusal is counted (``ApiServer.refusals``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from novanet_core.api.protocol import MAX_LINE, SUPPORTED_VERSIONS, VERSION, ApiError, encode
from novanet_core.api.router import ApiRouter

log = logging.getLogger(__name__)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = MAX_LINE
    max_connections: int = 64
    idle_timeout: float = 120.0
    requests_per_second: float = 0.0  # 0 = unlimited
    burst: int = 1

    @classmethod
    def from_config(cls, api: Any) -> Limits:
        """From the ``api`` section of NovaNetConfig."""
        return cls(max_request_bytes=api.maxRequestBytes, max_connections=api.maxConnections,
                   idle_timeout=api.idleTimeoutSeconds, requests_per_second=api.requestsPerSecond,
                   burst=api.requestBurst)


class _TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


class _Handler(socketserver.StreamRequestHandler):
    server: ApiServer

    def _refuse(self, code: str, message: str) -> None:
        # Read the caller's request first: closing with it unread (or before it is sent) would
        # hand the client ECONNRESET/EPIPE instead of this answer.
        req_id = None
        self.connection.settimeout(2.0)
        try:
            req = json.loads(self.rfile.readline(self.server.limits.max_request_bytes))
            req_id = req.get("id") if isinstance(req, dict) else None
        except (OSError, ValueError, RecursionError):
            pass  # nothing (valid) sent in time: still answer, without an id
        self.server.count(code)
        self._send({"v": VERSION, "id": req_id, "error": {"code": code, "message": message}})

    def handle(self) -> None:
        srv = self.server
        if not srv.enter():
            try:
                self._refuse("too_many_connections",
                             f"more than {srv.limits.max_connections} connections at once (api.maxConnections)")
            except OSError:
                pass
            return
        try:
            if srv.root_only and peer_uid(self.connection) != 0:
                self._refuse("permission_denied", "only root may use this socket")
                return
            self._serve()
        except OSError:
            return  # the caller went away (reset, broken pipe, or idle/unread past the timeout)
        finally:
            srv.leave()

    def _serve(self) -> None:
        srv = self.server
        limit = srv.limits.max_request_bytes
        self.connection.settimeout(srv.limits.idle_timeout)
        while True:
            try:
                line = self.rfile.readline(limit + 1)
            except TimeoutError:
                srv.count("idle_timeout")
                return
            if not line:
                return
            if len(line) > limit:
                srv.count("request_too_large")
                self._send({"v": VERSION, "id": None, "error": {
                    "code": "request_too_large",
                    "message": f"request longer than {limit} bytes (api.maxRequestBytes); closing the connection"}})
                self._drain_and_close()
                return
            if not line.strip():
                continue
            wait = srv.bucket.take() if srv.bucket is not None else 0.0
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
            except (ValueError, RecursionError) as e:
                srv.count("bad_request")
                msg = "nested too deeply" if isinstance(e, RecursionError) else str(e)
                self._send({"v": VERSION, "id": None, "error": {"code": "bad_request", "message": f"invalid JSON: {msg}"}})
                continue
            rid = req.get("id")
            if wait:
                srv.count("rate_limited")
                self._send({"v": VERSION, "id": rid, "error": {
                    "code": "rate_limited",
                    "message": f"more than {srv.limits.requests_per_second:g} requests/s (api.requestsPerSecond)",
                    "details": {"retryAfterSeconds": round(wait, 3)}}})
                continue
            self._dispatch(req, rid)

    def _dispatch(self, req: dict[str, Any], rid: Any) -> None:
        srv = self.server
        if req.get("v") not in SUPPORTED_VERSIONS:
            self._send({"v": VERSION, "id": rid, "error": {
                "code": "unsupported_version", "message": f"protocol version {req.get('v')!r} not supported",
                "details": {"supported": list(SUPPORTED_VERSIONS)}}})
            return
        method = req.get("method")
        entry = srv.router.get(method) if isinstance(method, str) else None
        if entry is None:
            shown = method if isinstance(method, str) and len(method) <= 100 else type(method).__name__
            self._send({"v": VERSION, "id": rid, "error": {"code": "unknown_method",
                        "message": f"unknown method {shown!r}", "details": {"methods": list(srv.router.methods())}}})
            return
        handler, stream, _ = entry
        params = req.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self._send({"v": VERSION, "id": rid, "error": {"code": "invalid_params", "message": "params must be an object"}})
            return
        try:
            result = handler(params)
            if stream:
                for item in result:
                    self._send({"v": VERSION, "id": rid, "item": item})
                self._send({"v": VERSION, "id": rid, "end": True})
            else:
                self._send({"v": VERSION, "id": rid, "result": result})
        except ApiError as e:
            self._send({"v": VERSION, "id": rid, "error": e.to_dict()})
        except OSError as e:
            if isinstance(e, (BrokenPipeError, ConnectionResetError, TimeoutError)):
                raise
            self._internal(method, rid, e)
        except Exception as e:  # report, keep serving: one bad request must not kill the daemon
            self._internal(method, rid, e)

    def _internal(self, method: str, rid: Any, e: Exception) -> None:
        log.exception("API method %s failed", method)
        self.server.count("internal")
        self._send({"v": VERSION, "id": rid, "error": {"code": "internal", "message": f"{type(e).__name__}: {e}"}})

    def _drain_and_close(self, seconds: float = 2.0) -> None:
        # Closing a unix socket with unread input resets it, and the caller would read ECONNRESET
        # instead of the answer: end our side, then discard what is in flight for a bounded time.
        self.connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        self.connection.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not self.connection.recv(1 << 16):
                    return
            except TimeoutError:
                continue

    def _send(self, obj: dict[str, Any]) -> None:
        self.wfile.write(encode(obj))
        self.wfile.flush()


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, router: ApiRouter, root_only: bool = True, mode: int = 0o600,
                 limits: Limits | None = None):
        self.router = router
        self.root_only = root_only
        self.path = path
        self.limits = limits or Limits()
        self.bucket = (_TokenBucket(self.limits.requests_per_second, self.limits.burst)
                       if self.limits.requests_per_second > 0 else None)
        self.refusals: collections.Counter[str] = collections.Counter()
        self._active = 0
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        # Created 0600 from the start (umask), not chmod-ed after bind: no window in which
        # another user could connect.
        old = os.umask(0o777 & ~mode)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        self._thread: threading.Thread | None = None

    def enter(self) -> bool:
        with self._lock:
            if self._active >= self.limits.max_connections:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def count(self, what: str) -> None:
        with self._lock:
            self.refusals[what] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"connections": self._active, "refused": dict(self.refusals)}

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name=f"api:{self.path}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
