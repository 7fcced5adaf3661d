"""Flow export for collectors (``flows.export``): every flow event as one JSON object per line.

Two sinks, either or both:

* **file** — appended to ``flows.export.file`` and rotated at ``maxBytes`` (``FILE`` → ``FILE.1`` →
  … → ``FILE.<backups>``), the shape log shippers tail (Vector ``file``, Fluent Bit ``tail``,
  Promtail). The rotation is done here rather than with ``logging.handlers.RotatingFileHandler``
  because that handler formats and flushes one record at a time, which at 100 k events/s costs
  more than the events themselves; here a whole consumer batch is one write.
* **socket** — a unix stream socket at ``flows.export.socket``; every connected reader gets the
  same lines (``socat UNIX-CONNECT:PATH -``). A reader that does not keep up loses whole batches
  (counted per reader and in total), never half a line, and never slows the others.

The exporter is a follower of :class:`~novanet_ebpf_policy.flows.FlowCollector`: the ring-buffer
consumer hands it each batch and moves on; a batch the exporter's queue cannot take is counted
in ``follower_dropped``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from novanet_ebpf_policy.flows import FlowCollector, LineEncoder

log = logging.getLogger(__name__)

CLIENT_BUFFER = 4 << 20  # bytes a socket reader may fall behind before it loses batches
# While a reader has lines pending, the writer comes back to its socket this often (not only when
# the next batch arrives): the kernel takes a socket buffer's worth per send, far less than a batch.
FLUSH_INTERVAL = 0.002


@dataclass
class _Client:
    sock: socket.socket
    pending: bytearray = field(default_factory=bytearray)
    dropped: int = 0


class FlowExporter:
    def __init__(self, collector: FlowCollector, file: str = "", max_bytes: int = 100 << 20, backups: int = 5,
                 socket_path: str = ""):
        self.collector = collector
        self.file, self.max_bytes, self.backups, self.socket_path = file, max_bytes, backups, socket_path
        self.exported = 0  # events written to at least one sink
        self.rotations = 0
        self.socket_dropped = 0  # events socket readers lost because they were behind
        self.errors = 0
        self._fh: Any = None
        self._size = 0
        self._srv: socket.socket | None = None
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._q: queue.Queue[list[tuple[Any, ...]]] | None = None
        self._threads: list[threading.Thread] = []
        self._enc = LineEncoder(collector)

    @property
    def enabled(self) -> bool:
        return bool(self.file or self.socket_path)

    def start(self) -> None:
        if not self.enabled:
            return
        if self.file:
            self._open()
        if self.socket_path:
            self._listen()
        self._q, _ = self.collector.subscribe()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, name="novanet-flow-export", daemon=True)]
        if self._srv is not None:
            self._threads.append(threading.Thread(target=self._accept, name="novanet-flow-export-accept",
                                                  daemon=True))
        for t in self._threads:
            t.start()
        log.info("flow export: %s", ", ".join(x for x in (self.file and f"file {self.file}",
                                                         self.socket_path and f"socket {self.socket_path}") if x))

    def stop(self) -> None:
        self._stop.set()
        if self._q is not None:
            self.collector.unsubscribe(self._q)
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._srv is not None:
            self._srv.close()
            self._srv = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        with self._lock:
            for c in self._clients:
                c.sock.close()
            self._clients = []

    def stats(self) -> dict[str, Any]:
        with self._lock:
            clients = [{"pending_bytes": len(c.pending), "dropped": c.dropped} for c in self._clients]
        return {"file": self.file, "socket": self.socket_path, "exported": self.exported,
                "rotations": self.rotations, "socket_dropped": self.socket_dropped, "errors": self.errors,
                "clients": clients}

    # ------------------------------------------------------------------ the writer
    def _run(self) -> None:
        assert self._q is not None
        while not self._stop.is_set():
            try:
                batch = self._q.get(timeout=FLUSH_INTERVAL if self._pending() else 0.2)
            except queue.Empty:
                self._flush_clients()
                continue
            try:
                data = self._encode(batch)
                if self._fh is not None:
                    self._write_file(data)
                if self._srv is not None:
                    self._send(data, len(batch))
                self.exported += len(batch)
            except Exception:  # an unwritable disk or a bad event must not end the export thread
                self.errors += 1
                log.exception("flow export")

    def _encode(self, batch: list[tuple[Any, ...]]) -> bytes:
        return self._enc.lines(batch).encode()

    # ------------------------------------------------------------------ file
    def _open(self) -> None:
        d = os.path.dirname(self.file)
        if d:
            os.makedirs(d, exist_ok=True)
        self._fh = open(self.file, "ab", buffering=0)
        self._size = self._fh.tell()

    def _write_file(self, data: bytes) -> None:
        self._fh.write(data)
        self._size += len(data)
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.file}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.file}.{i + 1}")
            os.replace(self.file, f"{self.file}.1")
        else:
            os.unlink(self.file)
        self.rotations += 1
        self._open()

    # ------------------------------------------------------------------ socket
    def _listen(self) -> None:
        d = os.path.dirname(self.socket_path)
        if d:
            os.makedirs(d, exist_ok=True)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)  # flow records name pods and addresses: root only, as the API
        s.listen(16)
        s.settimeout(0.2)
        self._srv = s

    def _accept(self) -> None:
        while not self._stop.is_set() and self._srv is not None:
            try:
                c, _ = self._srv.accept()
            except (TimeoutError, OSError):
                continue
            c.setblocking(False)
            with self._lock:
                self._clients.append(_Client(c))

    def _pending(self) -> bool:
        return any(c.pending for c in self._clients)

    def _send(self, data: bytes, events: int) -> None:
        with self._lock:
            for c in self._clients:
                # a reader that has taken everything gets the batch whatever its size (one batch
                # of a busy ring can be larger than the buffer); one still behind loses it
                if c.pending and len(c.pending) + len(data) > CLIENT_BUFFER:
                    c.dropped += events
                    self.socket_dropped += events
                else:
                    c.pending += data
        self._flush_clients()

    def _flush_clients(self) -> None:
        with self._lock:
            gone = []
            for c in self._clients:
                while c.pending:
                    try:
                        n = c.sock.send(c.pending)
                    except BlockingIOError:
                        break
                    except OSError:
                        gone.append(c)
                        break
                    del c.pending[:n]
            for c in gone:
                c.sock.close()
                self._clients.remove(c)
