"""Where a lab keeps things, and what its network namespaces are called.

Every name carries the lab name so that two labs (or two test runs) never collide, and so that
``lab down`` can find what a crashed lab left behind from the name alone:

  netns      <lab>.underlay, <lab>.outside, <lab>.node.<node>, <lab>.pod.<ns>.<pod>   (in /run/netns)
  state      /var/lib/novanet-lab/<lab>/        state.json, manifests/, <node>/ (config, logs, IPAM)
  runtime    /run/novanet-lab/<lab>/            <node>/*.sock, pods/ (pod server pid + ready files)
  bpffs      /sys/fs/bpf/novanet-lab/<lab>/<node>

Lab names are DNS labels (no dots), so the ``<lab>.`` prefix never matches another lab's netns.
The roots can be moved with NOVANET_LAB_STATE_ROOT / NOVANET_LAB_RUN_ROOT (the bpffs root cannot:
it must be on bpffs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
BPFFS = Path("/sys/fs/bpf")


def state_root() -> Path:
    return Path(os.environ.get("NOVANET_LAB_STATE_ROOT", "/var/lib/novanet-lab"))


def run_root() -> Path:
    return Path(os.environ.get("NOVANET_LAB_RUN_ROOT", "/run/novanet-lab"))


def bpf_root() -> Path:
    return BPFFS / "novanet-lab"


@dataclass(frozen=True)
class LabPaths:
    lab: str

    # ---- namespaces
    @property
    def netns_prefix(self) -> str:
        return f"{self.lab}."

    @property
    def underlay_netns(self) -> str:
        return f"{self.lab}.underlay"

    @property
    def outside_netns(self) -> str:
        return f"{self.lab}.outside"

    def node_netns(self, node: str) -> str:
        return f"{self.lab}.node.{node}"

    def pod_netns(self, namespace: str, pod: str) -> str:
        return f"{self.lab}.pod.{namespace}.{pod}"

    @staticmethod
    def netns_path(name: str) -> str:
        return str(NETNS_DIR / name)

    # ---- directories
    @property
    def state_dir(self) -> Path:
        return state_root() / self.lab

    @property
    def run_dir(self) -> Path:
        return run_root() / self.lab

    @property
    def bpf_dir(self) -> Path:
        return bpf_root() / self.lab

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def lock_file(self) -> Path:
        # Beside the lab's dirs, not inside them: `down` holds it while it removes them.
        return run_root() / f"{self.lab}.lock"

    @property
    def manifest_dir(self) -> Path:
        return self.state_dir / "manifests"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / node

    def node_run_dir(self, node: str) -> Path:
        return self.run_dir / node

    def node_bpf_root(self, node: str) -> Path:
        return self.bpf_dir / node

    def node_config(self, node: str) -> Path:
        return self.node_dir(node) / "config.yaml"

    def node_ipam_dir(self, node: str) -> Path:
        return self.node_dir(node) / "networks" / "novanet"

    def node_conflist(self, node: str) -> Path:
        return self.node_dir(node) / "net.d" / "10-novanet.conflist"

    def socket(self, node: str, which: str) -> Path:
        return self.node_run_dir(node) / f"{which}.sock"

    def daemon_log(self, node: str, daemon: str) -> Path:
        return self.node_dir(node) / f"{daemon}.log"

    def daemon_pid(self, node: str, daemon: str) -> Path:
        return self.node_dir(node) / f"{daemon}.pid"

    @property
    def outside_pid(self) -> Path:
        return self.run_dir / "outside.pid"

    @property
    def outside_log(self) -> Path:
        return self.state_dir / "outside.log"

    @property
    def pods_run_dir(self) -> Path:
        return self.run_dir / "pods"

    def pod_pid(self, namespace: str, pod: str) -> Path:
        return self.pods_run_dir / f"{namespace}.{pod}.pid"

    def pod_ready(self, namespace: str, pod: str) -> Path:
        return self.pods_run_dir / f"{namespace}.{pod}.ready"

    def pod_log(self, namespace: str, pod: str) -> Path:
        return self.pods_run_dir / f"{namespace}.{pod}.log"

    @property
    def marker(self) -> str:
        """A string every lab process has in its command line (config path or --lab flag)."""
        return f"/novanet-lab/{self.lab}/"
