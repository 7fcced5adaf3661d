"""A daemonset node's podman: its own configuration, image store and run root, run inside the node.

Every podman command of a node runs in the node's netns and mount namespace (``nsenter --mount
--net``), with ``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF`` files of the node's own:

- storage: graphroot in the node's lab dir, runroot on the node's ``/run`` tmpfs, and the image
  store ``make image`` filled (``build/image/storage``) as a read-only additional store, so the
  machine's podman storage, run root and images are never read or written;
- the runner (``podman kube play`` of the DaemonSet pod, as a kubelet's runtime) keeps podman's
  own network files in a directory of its own: kube play writes a default network file even for
  a host-network pod, and the node's ``/etc/cni/net.d`` is NovaNet's;
- the workload runtime (``podman run --network novanet``, a second CNI client) reads the node's
  ``/etc/cni/net.d`` and runs the plugins from ``/opt/cni/bin`` (what install-cni installed) and
  ``/usr/lib/cni`` (Debian's reference plugins, which a node package would put in /opt/cni/bin);
- ulimits no higher than this process's own (root here lacks CAP_SYS_RESOURCE, and runc cannot
  raise a hard limit), runc with cgroupfs (no systemd here), events to a file.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from novanet_lab.errors import LabError
from novanet_lab.paths import NETNS_DIR, LabPaths

# The node's /run is a tmpfs of its own (novanet_lab.daemonset.mounts), so podman's default
# runroot path there is private to the node.
RUNROOT = "/run/containers/storage"
NODE_CNI_DIRS = ("/opt/cni/bin", "/usr/lib/cni")


def podman_dir(paths: LabPaths, node: str) -> Path:
    return paths.node_dir(node) / "daemonset" / "podman"


def _limits() -> str:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)

    def fmt(lim: tuple[int, int], cap: int) -> str:
        hard = cap if lim[1] == resource.RLIM_INFINITY else min(lim[1], cap)
        soft = hard if lim[0] == resource.RLIM_INFINITY else min(lim[0], hard)
        return f"{soft}:{hard}"

    # nproc: podman lowers its own RLIMIT_NPROC (so conmon's, whose child runc is) to 32768 when it
    # cannot raise it, and runc cannot give a container more than it has (seen: EPERM "error
    # setting rlimit type 6" with the machine's 96363).
    return f'["nofile={fmt(nofile, 1 << 20)}", "nproc={fmt(nproc, 1 << 15)}"]'


def write_config(paths: LabPaths, node: str, image_store: str) -> None:
    d = podman_dir(paths, node)
    for sub in ("storage", "net.d", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{d / "storage"}"\nrunroot = "{RUNROOT}"\n'
        f'[storage.options]\nadditionalimagestores = ["{image_store}"]\n')
    common = (f"[containers]\ndefault_ulimits = {_limits()}\n"
              '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    (d / "runner.conf").write_text(common + f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{d / "net.d"}"\n')
    dirs = ", ".join(f'"{x}"' for x in NODE_CNI_DIRS)
    (d / "runtime.conf").write_text(
        common + f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "/etc/cni/net.d"\ncni_plugin_dirs = [{dirs}]\n')


def env(paths: LabPaths, node: str, workload: bool = False) -> dict[str, str]:
    d = podman_dir(paths, node)
    return {**os.environ, "CONTAINERS_CONF": str(d / ("runtime.conf" if workload else "runner.conf")),
            "CONTAINERS_STORAGE_CONF": str(d / "storage.conf"), "TMPDIR": str(d / "tmp")}


def argv(holder: int, netns_name: str, *args: str) -> list[str]:
    return ["nsenter", f"--mount=/proc/{holder}/ns/mnt", f"--net={NETNS_DIR / netns_name}", "podman", *args]


def run(paths: LabPaths, node: str, holder: int, netns_name: str, *args: str, workload: bool = False,
        timeout: float = 180.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(argv(holder, netns_name, *args), capture_output=True, text=True, timeout=timeout,
                           env=env(paths, node, workload), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LabError(f"node {node}: podman {' '.join(args)} did not finish in {timeout:.0f} s") from None
    if check and r.returncode != 0:
        raise LabError(f"node {node}: podman {' '.join(args)} exited {r.returncode}: {noise_free(r.stderr)[-1500:]}")
    return r


def noise_free(stderr: str) -> str:
    """podman's stderr without the lines that say it has no systemd (healthcheck timers): known, harmless."""
    return "\n".join(line for line in stderr.splitlines() if "systemd" not in line)
