"""A lab brought up through the real ``novanet`` CLI for a test, and always taken down."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from novanet_lab.paths import LabPaths

BIN = Path(sys.executable).parent


class LabUnderTest:
    def __init__(self, spec: dict[str, Any], tmp: Path, bin_dir: Path = BIN):
        """``bin_dir``: the venv whose ``novanet`` runs the lab (and so whose daemons the nodes run)."""
        self.bin = bin_dir
        # NOVANET_TEST_LAB_PREFIX: runs that share the machine give their labs their own prefix
        # (lab names become netns and interface name parts: at most 15 characters in all).
        prefix = os.environ.get("NOVANET_TEST_LAB_PREFIX", "t")[:4]
        self.name = f"{prefix}{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.spec = {**spec, "name": self.name}
        self.spec_file = tmp / "lab.yaml"
        self.spec_file.write_text(yaml.safe_dump(self.spec))
        self.paths = LabPaths(self.name)

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(self.bin / "novanet"), *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "NOVANET_LAB": self.name})
        if check and r.returncode != 0:
            raise AssertionError(f"novanet {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def ctl(self, *args: str, node: str = "node-1") -> Any:
        r = subprocess.run([str(self.bin / "novanetctl"), "--node", node, "--lab", self.name, *args, "-o", "json"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"novanetctl {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return json.loads(r.stdout)

    def up(self) -> dict[str, Any]:
        return json.loads(self.cli("lab", "up", "--spec", str(self.spec_file), "-q", "-o", "json").stdout)

    def down(self) -> None:
        self.cli("lab", "down", "-q", check=False)

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("lab", "status", "-o", "json", check=False).stdout)

    def pod_netns(self, pod: str) -> str:
        ns, name = pod.split("/")
        return LabPaths.netns_path(self.paths.pod_netns(ns, name))

    def node_netns(self, node: str = "node-1") -> str:
        return LabPaths.netns_path(self.paths.node_netns(node))

    def pod_ip(self, pod: str) -> str:
        return next(p["ip"] for p in self.status()["pods"] if f"{p['namespace']}/{p['name']}" == pod)

    def in_pod(self, pod: str, *argv: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(["nsenter", f"--net={self.pod_netns(pod)}", *argv], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    def wait_listening(self, pod: str, port: int, timeout: float = 20) -> None:
        """Wait until a TCP server in ``pod`` listens on ``port`` (a server just started with
        in_pod() is not listening yet, and a fixed sleep loses that race on a loaded machine)."""
        deadline = time.monotonic() + timeout
        while f":{port} " not in self.run_in(self.pod_netns(pod), "ss", "-Hltn", f"sport = :{port}").stdout:
            assert time.monotonic() < deadline, f"nothing listens on {pod} TCP {port}"
            time.sleep(0.05)

    def run_in(self, netns: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, check=check)

    def probe(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self.cli("lab", "probe", "-o", "json", *args).stdout)["results"]
