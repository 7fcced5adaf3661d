"""The lab as a container runtime: run a CNI plugin chain the way libcni does.

For each plugin of the node's conflist: find the binary named by ``type`` in CNI_PATH, run it inside
the node's netns with the CNI_* environment, and give it the plugin's config on stdin with ``name``
and ``cniVersion`` injected (and ``prevResult`` from the previous plugin on ADD, from the cached
result on CHECK/DEL). DEL walks the chain backwards. A non-zero exit carries an error JSON on
stdout (CNI spec), which is turned into one readable message.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novanet_lab.errors import LabError
from novanet_lab.paths import NETNS_DIR

CNI_VERSION = "1.1.0"
NETWORK_NAME = "novanet"
# Other plugins (bandwidth, portmap...) can be chained from Debian's containernetworking-plugins.
SYSTEM_CNI_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def venv_bin() -> Path:
    """Where the project's console scripts live: next to the running interpreter."""
    return Path(sys.executable).parent


def cni_path() -> str:
    return os.pathsep.join([str(venv_bin()), *SYSTEM_CNI_DIRS])


def conflist(agent_cni_socket: str) -> dict[str, Any]:
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{"type": "novanet-cni", "agentSocket": agent_cni_socket}],
    }


def container_id(lab: str, namespace: str, pod: str, nonce: str) -> str:
    return hashlib.sha256(f"{lab}/{namespace}/{pod}/{nonce}".encode()).hexdigest()


class CniError(LabError):
    def __init__(self, message: str, code: int | None = None, details: str = ""):
        super().__init__(message)
        self.code, self.details = code, details


@dataclass
class CniInvocation:
    node_netns: str
    pod_netns: str
    container_id: str
    namespace: str
    pod: str
    ifname: str = "eth0"
    timeout: float = 60.0
    # What a runtime passes for the plugins' declared capabilities (libcni's CapabilityArgs:
    # portMappings, bandwidth, ...); each plugin that declares a capability gets it in runtimeConfig.
    capability_args: dict[str, Any] | None = None
    # Where plugin binaries are looked up (None: the project's venv, then the system CNI dirs).
    path: str | None = None
    # A node with a mount namespace of its own (daemonset nodes): the plugins run in it, and
    # ``path`` is looked up under ``root`` (that namespace's /proc/PID/root).
    mount_ns: str | None = None
    root: str = ""

    def env(self, command: str, path: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=self.container_id,
            CNI_NETNS=str(NETNS_DIR / self.pod_netns),
            CNI_IFNAME=self.ifname,
            CNI_PATH=path,
            CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.pod}",
        )
        return env


def find_plugin(ptype: str, path: str, root: str = "") -> str:
    for d in path.split(os.pathsep):
        cand = Path(d) / ptype
        if Path(root + str(cand)).is_file() and os.access(root + str(cand), os.X_OK):
            return str(cand)
    raise CniError(f"CNI plugin {ptype!r} not found in CNI_PATH {path}")


def _run_plugin(inv: CniInvocation, command: str, plugin: dict[str, Any], net: dict[str, Any],
                prev: dict[str, Any] | None) -> dict[str, Any] | None:
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniError("conflist: a plugin has no 'type'")
    path = inv.path or cni_path()
    binary = find_plugin(ptype, path, inv.root)
    conf = dict(plugin, name=net["name"], cniVersion=net["cniVersion"])
    runtime = {k: v for k, v in (inv.capability_args or {}).items() if (plugin.get("capabilities") or {}).get(k) is True}
    if runtime:
        conf["runtimeConfig"] = {**(plugin.get("runtimeConfig") or {}), **runtime}
    if prev is not None:
        conf["prevResult"] = prev
    argv = ["nsenter", *([f"--mount={inv.mount_ns}"] if inv.mount_ns else []), f"--net={NETNS_DIR / inv.node_netns}", binary]
    try:
        proc = subprocess.run(
            argv, input=json.dumps(conf).encode(), capture_output=True, env=inv.env(command, path), timeout=inv.timeout
        )
    except subprocess.TimeoutExpired:
        raise CniError(f"CNI {command} of {inv.namespace}/{inv.pod}: {ptype} did not finish in {inv.timeout:.0f} s") from None
    out = proc.stdout.decode(errors="replace").strip()
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise _cni_failure(inv, command, ptype, proc.returncode, out, err)
    if command != "ADD":
        return None
    try:
        result = json.loads(out)
    except ValueError:
        raise CniError(
            f"CNI ADD of {inv.namespace}/{inv.pod}: {ptype} exited 0 but printed no JSON result: {out[:300]!r}"
            + (f"; stderr: {err[-300:]}" if err else "")
        ) from None
    if not isinstance(result, dict):
        raise CniError(f"CNI ADD of {inv.namespace}/{inv.pod}: {ptype} result is not a JSON object")
    return result


def _cni_failure(inv: CniInvocation, command: str, ptype: str, rc: int, out: str, err: str) -> CniError:
    what = f"CNI {command} of {inv.namespace}/{inv.pod} failed ({ptype}, exit {rc})"
    try:
        e = json.loads(out)
        if not isinstance(e, dict):
            raise ValueError
        msg = f"{what}: code {e.get('code')}: {e.get('msg', '')}"
        if e.get("details"):
            msg += f" ({e['details']})"
        return CniError(msg, e.get("code"), str(e.get("details", "")))
    except ValueError:
        tail = (out or err)[-500:]
        return CniError(f"{what}: {tail or 'no output'}", None, err)


def add(inv: CniInvocation, net: dict[str, Any]) -> dict[str, Any]:
    prev: dict[str, Any] | None = None
    for plugin in net["plugins"]:
        prev = _run_plugin(inv, "ADD", plugin, net, prev)
    if prev is None:
        raise CniError(f"conflist {net.get('name')}: has no plugins")
    return prev


def check(inv: CniInvocation, net: dict[str, Any], prev: dict[str, Any]) -> None:
    for plugin in net["plugins"]:
        _run_plugin(inv, "CHECK", plugin, net, prev)


def delete(inv: CniInvocation, net: dict[str, Any], prev: dict[str, Any] | None) -> None:
    errors = []
    for plugin in reversed(net["plugins"]):
        try:
            _run_plugin(inv, "DEL", plugin, net, prev)
        except CniError as e:
            errors.append(str(e))
    if errors:
        raise CniError("; ".join(errors))


def pod_ips(result: dict[str, Any]) -> list[str]:
    """Every pod address of a CNI result (one per family, in the result's order: primary first)."""
    return [str(i["address"]).split("/")[0] for i in result.get("ips") or [] if isinstance(i, dict) and "address" in i]


def pod_ip(result: dict[str, Any]) -> str:
    """The pod address from a CNI result (``ips[0].address`` is ``IP/prefix``)."""
    try:
        return str(result["ips"][0]["address"]).split("/")[0]
    except (KeyError, IndexError, TypeError):
        raise CniError(f"CNI result has no ips[0].address: {json.dumps(result)[:300]}") from None
