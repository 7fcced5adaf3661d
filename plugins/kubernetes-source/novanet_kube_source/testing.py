"""Test support shipped with the plugin (like pyroute2's fixtures): a small, real HTTP server speaking the
part of the Kubernetes API the state source uses: list and watch (with resourceVersion, bookmarks-free streaming, and 410 Gone after compaction) of
Nodes, Namespaces, Pods, NetworkPolicies, Services and EndpointSlices. No kube-apiserver can run on these machines; this is
the honest stand-in: real sockets, real HTTP, the official client on the other side."""

from __future__ import annotations

import bisect
import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PATHS = {
    "/api/v1/nodes": ("Node", "v1"),
    "/api/v1/namespaces": ("Namespace", "v1"),
    "/api/v1/pods": ("Pod", "v1"),
    "/apis/networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1"),
    "/api/v1/services": ("Service", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io/v1"),
}


def _key(obj: dict[str, Any]) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: a watch streams its events in chunks (Transfer-Encoding: chunked), as the
    # kube-apiserver does. Over HTTP/1.0 the client's reader waited for its buffer to fill
    # or the connection to close, so events arrived only at the watch timeout.
    protocol_version = "HTTP/1.1"

    @property
    def api(self) -> FakeKubeAPI:
        return self.server.api  # type: ignore[attr-defined,no-any-return]

    def log_message(self, *a: Any) -> None:
        return

    def do_GET(self) -> None:
        u = urlparse(self.path)
        q = parse_qs(u.query)
        if u.path not in PATHS:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        kind, version = PATHS[u.path]
        if q.get("watch", ["false"])[0] in ("true", "1"):
            self.api.watch_requests += 1
            self._watch(kind, int(q.get("resourceVersion", ["0"])[0] or 0),
                        float(q.get("timeoutSeconds", ["5"])[0]))
            return
        with self.api.lock:
            # Serialised under the lock, not deep-copied first: put() stores copies and never
            # changes one in place, and 30,000 deep copies were seconds of a big cluster's list
            # (a real API server answers it from its watch cache).
            body = {"kind": f"{kind}List", "apiVersion": version, "metadata": {"resourceVersion": str(self.api.rv)},
                    "items": list(self.api.objects[kind].values())}
            data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, kind: str, since: int, timeout: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._stream(kind, since, timeout)
            self.wfile.write(b"0\r\n\r\n")  # the watch ends (timeoutSeconds)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _stream(self, kind: str, since: int, timeout: float) -> None:
        if since and since < self.api.compacted_before:
            self._line({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                    "reason": "Expired", "code": 410,
                                                    "message": f"too old resource version: {since}"}})
            return
        deadline = time.monotonic() + timeout
        sent = since
        while time.monotonic() < deadline:
            with self.api.lock:
                # events are in resourceVersion order: skip to the first one after ``sent`` (a scan
                # of the whole history per wake-up was 30,000 entries per watch)
                start = bisect.bisect_right(self.api.events, sent, key=lambda e: e[0])
                pending = [e for e in self.api.events[start:] if e[2] == kind]
                if not pending:
                    self.api.lock.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                    continue
            for rv, typ, _k, obj in pending:
                self._line({"type": typ, "object": obj})
                sent = rv

    def _line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))  # one chunk per event
        self.wfile.flush()


class FakeKubeAPI:
    def __init__(self, netns: str | None = None, tls: tuple[str, str] | None = None) -> None:
        """``netns``: listen inside that network namespace (where the agent under test runs)."""
        self.lock = threading.Condition()
        self.rv = 100
        self.objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k, _ in PATHS.values()}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        self.compacted_before = 0
        self.watch_requests = 0

        if netns:
            from novanet_core.netns import in_netns

            with in_netns(netns):  # the listening socket keeps the namespace it was created in
                self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        else:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.api = self  # type: ignore[attr-defined]  # what _Handler serves
        scheme = "http"
        if tls is not None:  # (certfile, keyfile): serve HTTPS, as a real API server does
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def put(self, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        kind = obj["kind"]
        with self.lock:
            self.rv += 1
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            typ = "MODIFIED" if _key(obj) in self.objects[kind] else "ADDED"
            self.objects[kind][_key(obj)] = obj
            self.events.append((self.rv, typ, kind, obj))
            self.lock.notify_all()

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        with self.lock:
            obj = self.objects[kind].pop(f"{namespace}/{name}")
            self.rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
            self.events.append((self.rv, "DELETED", kind, obj))
            self.lock.notify_all()

    def compact(self) -> None:
        """Forget history: watches from older resourceVersions now get 410 Gone."""
        with self.lock:
            self.compacted_before = self.rv + 1
            self.events.clear()
