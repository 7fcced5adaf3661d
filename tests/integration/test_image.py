"""The node image (``make image``) has every program the node code runs, and what the pod spec runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.node import ROOT
from tests.support.shellouts import shellouts

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.slow]

IMAGE = "localhost/novanet:" + next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
                                    if line.startswith("version = "))
# Call sites whose program is data, not a literal (the tools they run are checked below all the same).
DYNAMIC = {
    "novanet_core/bundle.py": "runs the argv given to add_command, read at those call sites",
    "novanet_core/debug_api.py": "runs the argv of its table of node facts (uname, ls, ip, sysctl, nft)",
    "plugins/frr-bgp/novanet_frr_bgp/vtysh.py": "routing.settings.vtysh (default vtysh)",
    "plugins/frr-bgp/novanet_frr_bgp/plugin.py": "[routing.settings.vtysh, -N ...] (default vtysh)",
}
# What the DaemonSet's pod spec and the FRR sidecar run, besides the code's own calls.
POD_PROGRAMS = ["novanet", "novanet-agent", "novanet-dataplane", "novanetctl", "novanet-frr", "test", "rm",
                "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/lib/frr/bfdd", "vtysh", "mount", "bash"]


def podman_env() -> dict[str, str]:
    """podman with the configuration and the image store of this checkout's `make image`."""
    conf, storage = (ROOT / "build" / "image" / f for f in ("containers.conf", "storage.conf"))
    assert conf.exists() and storage.exists(), "make image writes build/image/{containers,storage}.conf: run `make image` first"
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def podman_run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "run", "--rm", "--network", "none", IMAGE, *argv], capture_output=True, text=True,
                          timeout=300, env=podman_env())


def test_the_code_calls_no_program_it_cannot_name():
    found, unresolved = shellouts()
    assert {"nft", "ip", "vtysh"} <= set(found)  # the reader sees the known calls
    assert sorted({w.rsplit(":", 1)[0] for w in unresolved} - set(DYNAMIC)) == []


def test_every_program_the_node_code_and_the_pod_spec_run_is_in_the_image():
    found, _ = shellouts()
    programs = sorted(set(found) | set(POD_PROGRAMS))
    exists = subprocess.run(["podman", "image", "exists", IMAGE], env=podman_env())
    assert exists.returncode == 0, f"{IMAGE} not built: run `make image`"
    script = "; ".join(f'command -v {p} >/dev/null || echo "missing {p}"' for p in programs)
    r = podman_run("bash", "-c", script + "; python3 -c 'import bcc' || echo 'missing bcc'; "
                   "test -x /opt/novanet/libexec/novanet/novanet-cni || echo 'missing novanet-cni'")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", r.stdout


def test_the_image_installs_the_cni_binary_and_the_shipped_conflist(tmp_path):
    """The install-cni init container's command, run in the image against a host directory."""
    host = tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "net.d").mkdir()
    r = subprocess.run(["podman", "run", "--rm", "--network", "none", "-v", f"{host}:/host", IMAGE,
                        "novanet", "install-cni", "--bin-dir", "/host/bin", "--conf-dir", "/host/net.d"],
                       capture_output=True, text=True, timeout=300, env=podman_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert (host / "bin" / "novanet-cni").read_bytes() == (ROOT / "build" / "novanet-cni").read_bytes()
    assert yaml.safe_load((host / "net.d" / "10-novanet.conflist").read_text()) == yaml.safe_load(
        Path(ROOT / "contrib" / "10-novanet.conflist").read_text())
