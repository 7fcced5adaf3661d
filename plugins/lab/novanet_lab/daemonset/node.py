"""One daemonset node: its private mounts, its podman, its DaemonSet pod, and pod netns bound into it.

Host-side layout (under the node's lab dir, removed by ``lab down`` with the rest of the lab):

  <state>/<node>/daemonset/   plan.json, holder pid/ready/error, stage/ (bind staging), pod.yaml,
                              root/ (the node's /opt/cni/bin, /var/lib/cni, /var/lib/novanet,
                              /var/cache/novanet),
                              podman/ (configs, graphroot, tmp)
  <state>/<node>/net.d/       the node's /etc/cni/net.d (install-cni writes the conflist here)
  <run>/<node>/               the node's /run/novanet (agent, CNI and dataplane sockets)
  <bpffs>/<node>/             the node's /sys/fs/bpf (pins under novanet/)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from novanet_lab import cgroups, procs
from novanet_lab.agents import BINARIES, markers
from novanet_lab.daemonset import podman
from novanet_lab.daemonset.render import NODE_CGROUP
from novanet_lab.errors import LabError
from novanet_lab.netns import inode
from novanet_lab.paths import LabPaths

POD_NAME = "novanet-{node}"  # render.node_pod: the DaemonSet's name, then the node's
CONTAINERS = {"dataplane": "novanet-dataplane", "agent": "novanet-agent", "frr": "frr"}
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL when the lab stops a pod


def ds_dir(paths: LabPaths, node: str) -> Path:
    return paths.node_dir(node) / "daemonset"


def is_daemonset(paths: LabPaths, node: str) -> bool:
    return ds_dir(paths, node).is_dir()


def pod_file(paths: LabPaths, node: str) -> Path:
    return ds_dir(paths, node) / "pod.yaml"


def container_name(node: str, daemon: str) -> str:
    return f"{POD_NAME.format(node=node)}-{CONTAINERS[daemon]}"


def mount_plan(paths: LabPaths, node: str) -> list[dict[str, Any]]:
    root = ds_dir(paths, node) / "root"
    return [
        {"target": "/run", "tmpfs": "mode=755"},
        {"target": "/run/novanet", "source": str(paths.node_run_dir(node))},
        {"target": "/run/netns", "tmpfs": "mode=755", "shared": True},
        {"target": "/opt/cni/bin", "source": str(root / "opt-cni-bin")},
        {"target": "/etc/cni/net.d", "source": str(paths.node_conflist(node).parent)},
        {"target": "/var/lib/cni", "source": str(root / "var-lib-cni")},
        {"target": "/var/lib/novanet", "source": str(root / "var-lib-novanet")},
        {"target": "/var/cache/novanet", "source": str(root / "var-cache-novanet")},
        {"target": "/sys/fs/bpf", "source": str(paths.node_bpf_root(node)), "shared": True},
        {"target": NODE_CGROUP, "source": str(cgroups.node_dir(paths.lab, node))},
    ]


def prepare(paths: LabPaths, node: str, pod_yaml: str, image_store: str) -> None:
    d = ds_dir(paths, node)
    plan = mount_plan(paths, node)
    for m in plan:
        if "source" in m:
            Path(str(m["source"])).mkdir(parents=True, exist_ok=True)
    (d / "stage").mkdir(parents=True, exist_ok=True)
    (d / "plan.json").write_text(json.dumps({"stage": str(d / "stage"), "mounts": plan}, indent=1))
    pod_file(paths, node).write_text(pod_yaml)
    podman.write_config(paths, node, image_store)


def holder_pid(paths: LabPaths, node: str) -> int | None:
    return procs.owned_pid(ds_dir(paths, node) / "holder.pid", markers(paths))


def _holder(paths: LabPaths, node: str) -> int:
    pid = holder_pid(paths, node)
    if pid is None:
        raise LabError(f"node {node}: its mount namespace is gone (the holder process exited); "
                       "`novanet lab down` and up again")
    return pid


def start_holder(paths: LabPaths, node: str, timeout: float = 30.0) -> int:
    d = ds_dir(paths, node)
    ready, error = d / "holder.ready", d / "holder.error"
    for f in (ready, error):
        f.unlink(missing_ok=True)
    pid = procs.start_in_netns(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "novanet_lab.daemonset.mounts",
         "--plan", str(d / "plan.json"), "--ready", str(ready), "--error", str(error)],
        paths.node_netns(node), d / "holder.log", d / "holder.pid")
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if error.exists() or not procs.is_running(pid):
            procs.reap()
            why = error.read_text().strip() if error.exists() else procs.log_tail(d / "holder.log")
            raise LabError(f"node {node}: cannot make its private mounts: {why}")
        if time.monotonic() > deadline:
            raise LabError(f"node {node}: its private mounts were not ready within {timeout:.0f} s")
        time.sleep(0.02)
    return pid


def run_podman(paths: LabPaths, node: str, *args: str, workload: bool = False, timeout: float = 180.0,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    return podman.run(paths, node, _holder(paths, node), paths.node_netns(node), *args, workload=workload,
                      timeout=timeout, check=check)


def play(paths: LabPaths, node: str, image: str, replace: bool = False) -> None:
    """``podman kube play`` of the node's DaemonSet pod (``--replace``: a rolling restart's new pod)."""
    if not replace and run_podman(paths, node, "image", "exists", image, check=False).returncode != 0:
        raise LabError(f"node {node}: image {image} is not in the image store daemonset.imageStore "
                       "(run `make image`)")
    run_podman(paths, node, "kube", "play", *(["--replace"] if replace else []), str(pod_file(paths, node)))


def save_logs(paths: LabPaths, node: str) -> None:
    """Append the pod's container logs to the node's daemon logs (a replaced pod's logs go with it)."""
    for daemon in CONTAINERS:
        r = run_podman(paths, node, "logs", container_name(node, daemon), check=False, timeout=60)
        if r.returncode == 0 and (r.stdout or r.stderr):
            with open(paths.daemon_log(node, daemon), "a") as f:
                f.write(f"--- {container_name(node, daemon)}, saved {time.strftime('%H:%M:%S')}\n")
                f.write(r.stdout + r.stderr)


def logs(paths: LabPaths, node: str, daemon: str) -> str:
    """Saved logs of the daemon's earlier containers, then the running one's (``kubectl logs`` and ``--previous``)."""
    try:
        saved = paths.daemon_log(node, daemon).read_text(errors="replace")
    except FileNotFoundError:
        saved = ""
    r = run_podman(paths, node, "logs", container_name(node, daemon), check=False, timeout=60)
    return saved + (r.stdout + r.stderr if r.returncode == 0 else "")


def describe(paths: LabPaths, node: str) -> str:
    """The node pod's containers and the last lines of its agent's and dataplane's logs (for errors)."""
    if holder_pid(paths, node) is None:
        return "    (the node's mount namespace is gone)"
    ps = run_podman(paths, node, "ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False, timeout=60)
    out = [f"    {line}" for line in ps.stdout.splitlines()]
    for daemon in ("dataplane", "agent"):
        tail = logs(paths, node, daemon).splitlines()[-8:]
        out += [f"    {daemon}: {line}" for line in tail]
    return "\n".join(out)


def rolling_restart(paths: LabPaths, node: str, image: str, grace: int = STOP_GRACE) -> None:
    """Delete the node's pod gracefully (SIGTERM, ``grace`` seconds, SIGKILL) and create it again, as a
    DaemonSet rolling update does, keeping the old containers' logs."""
    run_podman(paths, node, "pod", "stop", "-t", str(grace), POD_NAME.format(node=node))
    save_logs(paths, node)
    play(paths, node, image, replace=True)


def remove_containers(paths: LabPaths, node: str) -> list[str]:
    """Remove every pod and container of the node's podman (``lab down``); returns the errors."""
    if holder_pid(paths, node) is None:
        return []
    errors = []
    for args in (("pod", "rm", "-af", "-t", str(STOP_GRACE)), ("rm", "-af", "-t", "0")):
        r = run_podman(paths, node, *args, check=False)
        if r.returncode != 0:
            errors.append(f"node {node}: podman {' '.join(args)}: {podman.noise_free(r.stderr)[-300:]}")
    return errors


def daemon_pid(paths: LabPaths, node: str, daemon: str) -> int | None:
    """The pid of the node's running daemon container process (in the node netns, named for the daemon)."""
    ino = inode(paths.node_netns(node))
    if ino is None:
        return None
    suffix = "/" + BINARIES[daemon]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != ino:
                continue
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").endswith(suffix) for a in args[:2]) and procs.is_running(int(entry)):
            return int(entry)
    return None


# --------------------------------------------------------------------------- pod netns in the node


def bind_netns(paths: LabPaths, node: str, netns_name: str) -> None:
    """Make pod netns ``netns_name`` (in the machine's /run/netns) appear in the node's /run/netns,
    as a runtime on the node would have created it there."""
    holder = _holder(paths, node)
    Path(f"/proc/{holder}/root/run/netns/{netns_name}").touch()
    r = procs_run(["nsenter", f"--mount=/proc/{holder}/ns/mnt", f"--net=/run/netns/{netns_name}",
                   "mount", "--bind", "/proc/self/ns/net", f"/run/netns/{netns_name}"])
    if r:
        raise LabError(f"node {node}: cannot bind netns {netns_name} into the node: {r}")


def unbind_netns(paths: LabPaths, node: str, netns_name: str) -> None:
    holder = holder_pid(paths, node)
    if holder is None:
        return
    procs_run(["nsenter", f"--mount=/proc/{holder}/ns/mnt", "umount", f"/run/netns/{netns_name}"])
    Path(f"/proc/{holder}/root/run/netns/{netns_name}").unlink(missing_ok=True)


def procs_run(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return "" if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")


def cni_context(paths: LabPaths, node: str) -> tuple[str, str, str]:
    """(mount namespace, root for plugin lookup, CNI_PATH) of the node's runtime: the node's
    /opt/cni/bin, then Debian's reference plugins."""
    holder = _holder(paths, node)
    return f"/proc/{holder}/ns/mnt", f"/proc/{holder}/root", os.pathsep.join(podman.NODE_CNI_DIRS)
