"""Helpers for the overlay tests: node-netns commands, tshark captures, dataplane calls."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from novanet_core.api.client import ApiClient
from tests.support.lab import LabUnderTest


def ping(lab: LabUnderTest, src: str, dst_ip: str, *extra: str, count: int = 1) -> subprocess.CompletedProcess[str]:
    return lab.run_in(lab.pod_netns(src), "ping", "-n", "-c", str(count), "-W", "2", *extra, dst_ip)


def dataplane(lab: LabUnderTest, node: str, method: str, params: dict[str, Any] | None = None) -> Any:
    c = ApiClient(str(lab.paths.run_dir / node / "dataplane.sock"), timeout=30)
    try:
        return c.call(method, params)
    finally:
        c.close()


def drops(lab: LabUnderTest, node: str) -> dict[str, int]:
    return dataplane(lab, node, "ebpf.drops")["drops"]


def drop_events(lab: LabUnderTest, node: str) -> list[dict[str, Any]]:
    return list(_stream(lab, node, "ebpf.flows", {"drops_only": True, "limit": 4096}))


def _stream(lab: LabUnderTest, node: str, method: str, params: dict[str, Any]) -> Any:
    c = ApiClient(str(lab.paths.run_dir / node / "dataplane.sock"), timeout=30)
    try:
        yield from c.stream(method, params)
    finally:
        c.close()


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


class Capture:
    """tshark on a node's underlay device, decoding to fields; started before the traffic."""

    def __init__(self, lab: LabUnderTest, node: str, bpf_filter: str, fields: list[str], count: int,
                 extra: list[str] | None = None, duration: int = 10):
        self.fields = fields
        argv = ["nsenter", f"--net={lab.node_netns(node)}", "tshark", "-l", "-n", "-i", "eth0", "-f", bpf_filter,
                "-c", str(count), "-a", f"duration:{duration}", "-T", "fields", "-E", "separator=|",
                *(extra or [])]
        for f in fields:
            argv += ["-e", f]
        self.proc = subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # tshark logs "Capture started." on stderr once its socket is open; traffic sent before
        # that is not seen. (readline blocks, but tshark ends by itself after `duration`.)
        buf = ""
        deadline = time.monotonic() + 15
        while "Capture started" not in buf and time.monotonic() < deadline and self.proc.poll() is None:
            buf += self.proc.stderr.readline()  # type: ignore[union-attr]
        self.startup = buf
        if "Capture started" not in buf:
            self.stop()
            raise AssertionError(f"tshark did not start capturing: {buf[-500:]}")

    def rows(self, timeout: float = 20) -> list[dict[str, str]]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return [dict(zip(self.fields, line.split("|"), strict=False)) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def agent(lab: LabUnderTest, node: str, method: str, params: dict[str, Any] | None = None) -> Any:
    """A call on a node's agent API (plugin methods such as geneve.status / vxlan.status)."""
    c = ApiClient(str(lab.paths.socket(node, "agent")), timeout=30)
    try:
        return c.call(method, params)
    finally:
        c.close()
