"""Threaded unix-socket server for the local API, with SO_PEERCRED caller checks."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import struct
import threading
from typing import Any

from novanet_core.api.protocol import MAX_LINE, SUPPORTED_VERSIONS, VERSION, ApiError, encode
from novanet_core.api.router import ApiRouter

log = logging.getLogger(__name__)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class _Handler(socketserver.StreamRequestHandler):
    server: ApiServer

    def _refuse(self) -> None:
        # Read the caller's request first: closing with it unread (or before it is sent) would
        # hand the client ECONNRESET/EPIPE instead of this answer.
        req_id = None
        self.connection.settimeout(2.0)
        try:
            req = json.loads(self.rfile.readline(MAX_LINE))
            req_id = req.get("id") if isinstance(req, dict) else None
        except (OSError, ValueError):
            pass  # nothing (valid) sent in time: still answer, without an id
        self.wfile.write(encode({"v": VERSION, "id": req_id, "error": {"code": "permission_denied",
                                 "message": "only root may use this socket"}}))

    def handle(self) -> None:
        srv = self.server
        if srv.root_only and peer_uid(self.connection) != 0:
            self._refuse()
            return
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
            except ValueError as e:
                self._send({"v": VERSION, "id": None, "error": {"code": "bad_request", "message": f"invalid JSON: {e}"}})
                continue
            rid = req.get("id")
            if req.get("v") not in SUPPORTED_VERSIONS:
                self._send({"v": VERSION, "id": rid, "error": {
                    "code": "unsupported_version", "message": f"protocol version {req.get('v')!r} not supported",
                    "details": {"supported": list(SUPPORTED_VERSIONS)}}})
                continue
            method = req.get("method")
            entry = srv.router.get(method) if isinstance(method, str) else None
            if entry is None:
                self._send({"v": VERSION, "id": rid, "error": {"code": "unknown_method",
                            "message": f"unknown method {method!r}", "details": {"methods": list(srv.router.methods())}}})
                continue
            handler, stream, _ = entry
            params = req.get("params") or {}
            if not isinstance(params, dict):
                self._send({"v": VERSION, "id": rid, "error": {"code": "invalid_params", "message": "params must be an object"}})
                continue
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
            except (BrokenPipeError, ConnectionResetError):
                return
            except Exception as e:  # report, keep serving: one bad request must not kill the agent
                log.exception("API method %s failed", method)
                try:
                    self._send({"v": VERSION, "id": rid, "error": {"code": "internal", "message": f"{type(e).__name__}: {e}"}})
                except OSError:
                    return

    def _send(self, obj: dict[str, Any]) -> None:
        self.wfile.write(encode(obj))
        self.wfile.flush()


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, router: ApiRouter, root_only: bool = True, mode: int = 0o600):
        self.router = router
        self.root_only = root_only
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        super().__init__(path, _Handler)
        os.chmod(path, mode)
        self._thread: threading.Thread | None = None

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
