"""The flow exporter's socket sink: a reader that keeps up gets every line, even of a batch larger
than its buffer (a busy ring is read in batches of tens of thousands of events); one that does not
read loses whole batches, counted, and what it got plus what it lost is what was exported."""

from __future__ import annotations

import ctypes
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from novanet_ebpf_policy import export
from novanet_ebpf_policy.export import FlowExporter
from novanet_ebpf_policy.flows import EVENT_POLICY, FlowCollector
from novanet_ebpf_policy.layouts import FlowEvent


def _batch(n: int) -> list[tuple[object, ...]]:
    ev = FlowEvent(family=2, verdict=2, drop_reason=7, src_identity=1001, dst_identity=1002, protocol=17, hook=1,
                   src_port=40000, dst_port=9, bytes=64, packets=1)
    ctypes.memmove(ev.src_ip, bytes([10, 42, 0, 10]), 4)
    ctypes.memmove(ev.dst_ip, bytes([10, 42, 0, 11]), 4)
    raw = bytearray(bytes(ev)[:EVENT_POLICY.size])
    out = []
    for i in range(n):
        ev.timestamp_ns = 1_000_000 + i
        raw[:] = bytes(ev)[:EVENT_POLICY.size]
        out.append(EVENT_POLICY.unpack(bytes(raw)))
    return out


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[FlowCollector, FlowExporter, socket.socket]]:
    c = FlowCollector()
    path = f"/tmp/fl-export-{uuid.uuid4().hex[:8]}.sock"  # AF_UNIX paths are short: not under tmp_path
    ex = FlowExporter(c, str(tmp_path / "flows.jsonl"), 64 << 20, 1, path)
    ex.start()
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        reader.connect(path)
        deadline = time.monotonic() + 60
        while not ex.stats()["clients"]:
            assert time.monotonic() < deadline, "the exporter did not accept the reader"
            time.sleep(0.01)
        yield c, ex, reader
    finally:
        reader.close()
        ex.stop()


def _read_lines(reader: socket.socket, want: int, timeout: float = 30) -> list[bytes]:
    buf = bytearray()
    got = 0
    reader.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        try:
            chunk = reader.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            break
        buf += chunk
        got += chunk.count(b"\n")
    return bytes(buf).splitlines()


def test_a_batch_larger_than_the_buffer_reaches_a_reader_that_keeps_up(exporter) -> None:
    c, ex, reader = exporter
    batch = _batch(10000)
    assert len(ex._enc.lines(batch)) > export.CLIENT_BUFFER  # the case: one batch over the buffer
    c._deliver(batch)
    lines = _read_lines(reader, len(batch))
    assert len(lines) == len(batch)
    assert [json.loads(x)["timestamp_ns"] for x in lines] == [1_000_000 + i for i in range(len(batch))]  # in order
    st = ex.stats()
    assert (st["exported"], st["socket_dropped"]) == (len(batch), 0)


def test_a_reader_that_does_not_read_loses_whole_batches_counted(exporter) -> None:
    c, ex, reader = exporter
    sent = 0
    for _ in range(12):  # ~1 MB each: far past the socket's buffer and CLIENT_BUFFER
        c._deliver(_batch(1500))
        sent += 1500
    deadline = time.monotonic() + 60  # a bound, not a pause: formatting 18,000 flows is slow under load
    while ex.stats()["exported"] < sent:
        assert time.monotonic() < deadline, "the exporter did not take every batch"
        time.sleep(0.01)
    st = ex.stats()
    assert st["socket_dropped"] > 0 and st["socket_dropped"] % 1500 == 0  # whole batches
    lines = _read_lines(reader, sent - st["socket_dropped"])
    assert len(lines) == sent - st["socket_dropped"]  # every line it got is whole, none twice
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in lines)
