"""Client for NovaNet's local API sockets. Deliberately stdlib-only: the CNI binary imports it."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from typing import Any

from novanet_core.api.protocol import MAX_LINE, VERSION, ApiError

_ids = itertools.count(1)


class Unreachable(Exception):
    """The socket is missing or nobody listens (agent down or restarting)."""


class _Closed(Unreachable):
    """The server closed the connection (or reset it) without answering."""


class ApiClient:
    def __init__(self, path: str, timeout: float | None = 30.0):
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._rfile: Any = None

    def _connect(self) -> None:
        if self._sock is not None:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as e:
            s.close()
            raise Unreachable(f"cannot connect to {self.path}: {e.strerror or e}") from None
        self._sock, self._rfile = s, s.makefile("rb")

    def close(self) -> None:
        if self._sock is not None:
            self._rfile.close()
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, method: str, params: dict[str, Any] | None) -> int:
        self._connect()
        rid = next(_ids)
        msg = json.dumps({"v": VERSION, "id": rid, "method": method, "params": params or {}}, default=str)
        assert self._sock is not None
        try:
            self._sock.sendall(msg.encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError) as e:
            self.close()
            raise _Closed(f"{self.path}: connection lost ({e})") from None
        return rid

    def _recv(self) -> dict[str, Any]:
        try:
            line = self._rfile.readline(MAX_LINE)
        except ConnectionResetError as e:
            self.close()
            raise _Closed(f"{self.path}: no answer ({e})") from None
        except TimeoutError as e:
            self.close()
            raise Unreachable(f"{self.path}: no answer ({e})") from None
        if not line:
            self.close()
            raise _Closed(f"{self.path}: connection closed by the server")
        return json.loads(line)

    def _roundtrip(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        reused = self._sock is not None
        try:
            self._send(method, params)
            return self._recv()
        except _Closed:
            if not reused:
                raise
        # A kept-open connection the server has since closed (api.idleTimeoutSeconds, or a
        # restart): once more on a fresh one before reporting the server unreachable.
        self._send(method, params)
        return self._recv()

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        resp = self._roundtrip(method, params)
        if "error" in resp:
            e = resp["error"]
            raise ApiError(e.get("code", "error"), e.get("message", ""), e.get("details"))
        return resp.get("result")

    def stream(self, method: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        resp = self._roundtrip(method, params)
        while True:
            if "error" in resp:
                e = resp["error"]
                raise ApiError(e.get("code", "error"), e.get("message", ""), e.get("details"))
            if resp.get("end"):
                return
            yield resp.get("item")
            resp = self._recv()
