"""A single NovaNet node in a network namespace, with its own agent and dataplane processes.

Used by the integration tests: real netns, real veths, real processes talking over the real
sockets. Everything it creates carries a unique prefix and is removed in ``close()``, which the
fixtures call even when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from novanet_core.api.client import ApiClient, Unreachable
from tests.support import cgroups

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


class NodeUnderTest:
    def __init__(self, datapath: str = "kernel", pod_cidr: str = "10.42.7.0/24", extra: dict[str, Any] | None = None,
                 prefix: str = "nvt"):
        self.id = uuid.uuid4().hex[:6]
        self.prefix = prefix  # of the netns names: benches running beside the tests give their own
        self.ns = f"{prefix}-n{self.id}"
        self.dir = Path(f"/tmp/novanet-test-{self.id}")
        self.run = self.dir / "run"
        self.pods: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.node_ip = "172.31.250.1"
        # How cni() runs a CNI client (None: the Python reference in the node netns) and the
        # cniVersion of the config it sends by default (tests/support/cni_clients.py sets both).
        self.cni_argv: list[str] | None = None
        self.cni_version = "1.1.0"
        self.config: dict[str, Any] = {
            "nodeName": f"node-{self.id}",
            "nodeIP": self.node_ip,
            "clusterCIDR": "10.42.0.0/16",
            "podCIDR": pod_cidr,
            "datapath": datapath,
            "ipam": {"dataDir": str(self.dir / "ipam")},
            # the socket-level Service hooks go on a cgroup of this node's own, never the machine's root
            "bpf": {"root": f"/sys/fs/bpf/novanet-test-{self.id}", "cgroupRoot": cgroups.create(f"novanet-test-{self.id}")},
            "sockets": {"agent": str(self.run / "novanet.sock"), "cni": str(self.run / "cni.sock"),
                        "dataplane": str(self.run / "dataplane.sock")},
            "metrics": {"address": ""},
            "stateSource": {"type": "manifests", "path": str(self.dir / "manifests")},
        }
        for k, v in (extra or {}).items():
            if isinstance(v, dict) and isinstance(self.config.get(k), dict):
                self.config[k] = {**self.config[k], **v}
            else:
                self.config[k] = v
        (self.dir / "manifests").mkdir(parents=True)
        self.cfg_path = self.dir / "config.yaml"
        self.cfg_path.write_text(yaml.safe_dump(self.config))
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        # An underlay-ish interface carrying the node IP (veth whose peer stays unused).
        sh("ip", "-n", self.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.node_ip}/24", "dev", "eth0")
        sh("ip", "-n", self.ns, "link", "set", "eth0", "up")

    def set_config(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)
        self.cfg_path.write_text(yaml.safe_dump(self.config))

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, wrap: tuple[str, ...] = ()) -> None:
        """``wrap``: argv the daemon's script runs under (a profiler, say)."""
        log = open(self.dir / f"{name}.log", "ab")
        env = dict(os.environ)
        # Lets NOVANET_PLUGINS name test plugins under tests/ (as a third-party plugin would be installed).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.procs[name] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", *wrap, str(BIN / f"novanet-{name}"), "--config", str(self.cfg_path)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def start(self, wait: float = 30.0) -> None:
        self._spawn("dataplane")
        self._spawn("agent")
        self.wait_ready(wait)

    def wait_ready(self, wait: float = 120.0) -> dict[str, Any]:
        # A condition waited for, not a pause: the agent is ready after the dataplane's compile,
        # which on a loaded 2-core machine has taken over 30 s.
        deadline = time.monotonic() + wait
        last: Any = None
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log(name)}")
            try:
                st = self.call("status")
                if st.get("ready"):
                    return st
                last = st
            except Unreachable as e:
                last = e
            time.sleep(0.1)
        raise TimeoutError(f"node not ready after {wait}s: {last}\nagent log:\n{self.log('agent')}\ndataplane log:\n{self.log('dataplane')}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.get(name)
        if p and p.poll() is None:
            os.killpg(p.pid, sig)
            p.wait(10)

    def restart(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.kill(name, sig)
        self._spawn(name)

    def log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text()[-4000:]
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ API
    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with ApiClient(self.config["sockets"]["agent"], timeout=10) as c:
            return c.call(method, params)

    def write_manifest(self, name: str, objs: list[dict[str, Any]]) -> None:
        p = self.dir / "manifests" / name
        p.write_text(yaml.safe_dump_all(objs))

    # ------------------------------------------------------------------ pods / CNI
    def add_pod_netns(self) -> str:
        name = f"{self.prefix}-p{self.id}-{len(self.pods)}"
        sh("ip", "netns", "add", name)
        self.pods.append(name)
        return f"/run/netns/{name}"

    def cni(self, command: str, container_id: str = "", netns: str = "", ifname: str = "eth0",
            conf: dict[str, Any] | None = None, args: str = "", stdin: str | None = None,
            env_override: dict[str, str] | None = None, binary: str | None = None) -> tuple[int, Any]:
        env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": command, "CNI_PATH": str(BIN)}
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        if netns:
            env["CNI_NETNS"] = netns
        if ifname:
            env["CNI_IFNAME"] = ifname
        if args:
            env["CNI_ARGS"] = args
        env.update(env_override or {})
        if stdin is None:
            c = {"cniVersion": self.cni_version, "name": "novanet", "type": "novanet-cni",
                 "agentSocket": self.config["sockets"]["cni"], **(conf or {})}
            stdin = json.dumps(c)
        argv = ["nsenter", f"--net=/run/netns/{self.ns}", binary] if binary else self.cni_argv or [
            "nsenter", f"--net=/run/netns/{self.ns}", str(BIN / "novanet-cni")]
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)
        self.last_stderr = p.stderr
        out = json.loads(p.stdout) if p.stdout.strip() else None
        return p.returncode, out

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name, signal.SIGTERM)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill(name)
        for pod in self.pods:
            sh("ip", "netns", "del", pod, check=False)
        sh("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.config["bpf"]["root"], ignore_errors=True)
        cgroups.remove(self.config["bpf"]["cgroupRoot"])
        shutil.rmtree(self.dir, ignore_errors=True)
