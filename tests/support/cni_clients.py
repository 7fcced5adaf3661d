"""The CNI clients the conformance suite runs, each the way a runtime would execute it.

- ``python``: the reference client (``novanet_core/cni/client.py``, the venv's console script).
- ``c``: the static C binary built from ``cni/`` (``make cni``).
- ``installed``: the binary ``novanet install-cni`` put in a node's ``/opt/cni/bin``, executed in
  a mount namespace whose root holds only that directory and the agent's socket directory (no
  /usr, no Python, no venv, no /opt/novanet): what a node without Python gives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.node import BIN, ROOT, NodeUnderTest

CLIENTS = ("python", "c", "installed")
C_BINARY = ROOT / "build" / "novanet-cni"
ISOLATED_EXEC = ROOT / "tests" / "support" / "isolated_exec.py"


def build_c_binary() -> Path:
    """``make cni`` (a no-op when the sources did not change): tests never run a stale binary."""
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "cni"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"make cni failed:\n{r.stdout}{r.stderr}")
    return C_BINARY


def install_cni(node: NodeUnderTest, host_root: Path) -> tuple[Path, Path]:
    """``novanet install-cni`` into a node-like tree; returns (bin dir, conf dir)."""
    bin_dir, conf_dir = host_root / "opt/cni/bin", host_root / "etc/cni/net.d"
    r = subprocess.run([str(BIN / "novanet"), "install-cni", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir),
                        "--agent-socket", node.config["sockets"]["cni"]], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"novanet install-cni failed:\n{r.stdout}{r.stderr}")
    return bin_dir, conf_dir


def isolated_argv(node: NodeUnderTest, bin_dir: Path, listing: bool = False) -> list[str]:
    run_dir = str(Path(node.config["sockets"]["cni"]).parent)
    return [sys.executable, str(ISOLATED_EXEC), "--netns", f"/run/netns/{node.ns}",
            "--bind", f"{bin_dir}:/opt/cni/bin", "--bind", f"{run_dir}:{run_dir}",
            *(["--list"] if listing else []), "--", "/opt/cni/bin/novanet-cni"]


def use_client(node: NodeUnderTest, kind: str, workdir: Path) -> None:
    """Make ``node.cni()`` run the given client."""
    if kind == "python":
        node.cni_argv = None
    elif kind == "c":
        node.cni_argv = ["nsenter", f"--net=/run/netns/{node.ns}", str(build_c_binary())]
    elif kind == "installed":
        build_c_binary()
        bin_dir, conf_dir = install_cni(node, workdir / "host")
        node.cni_argv = isolated_argv(node, bin_dir)
        node.installed = (bin_dir, conf_dir)  # type: ignore[attr-defined]
    else:
        raise ValueError(kind)


def conflist_plugins(conf_dir: Path) -> list[str]:
    return [p["type"] for p in json.loads((conf_dir / "10-novanet.conflist").read_text())["plugins"]]
