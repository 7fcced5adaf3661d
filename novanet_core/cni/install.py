"""Install the CNI binary and the conflist on a node (what the DaemonSet's install-cni init container does).

The binary is the static C client built from ``cni/`` (``make cni``): the runtime executes it on
the host, where neither the image's Python nor its files exist. The build puts it at
``<prefix>/libexec/novanet/novanet-cni`` of the Python installation (the venv in development,
``/opt/novanet`` in the image); ``NOVANET_CNI_BINARY`` or ``--binary`` point elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

CONFLIST_NAME = "10-novanet.conflist"
BINARY_NAME = "novanet-cni"
# podman 4.3 and containerd 1.6 (Debian 12) accept configs up to 1.0.0; the plugin speaks up to 1.1.0.
CONFLIST_VERSION = "1.0.0"


class InstallError(Exception):
    pass


def built_binary() -> Path:
    """The C client this installation carries."""
    env = os.environ.get("NOVANET_CNI_BINARY")
    return Path(env) if env else Path(sys.prefix) / "libexec" / "novanet" / BINARY_NAME


def conflist(agent_socket: str = "/run/novanet/cni.sock", cni_version: str = CONFLIST_VERSION,
             mtu: int | None = None, name: str = "novanet") -> dict[str, Any]:
    """NovaNet's network, with the reference ``portmap`` and ``bandwidth`` plugins chained after it.

    ``portmap`` (capability ``portMappings``) implements hostPort / ``podman -p``; ``bandwidth``
    (capability ``bandwidth``) the ingress/egress rate limits a runtime passes. Both read the pod's
    interfaces and IPs from NovaNet's result (``prevResult``). NovaNet declares ``bandwidth`` too:
    the runtime then passes it the same limits, and the eBPF datapath leaves a limited pod's packets
    to the kernel, where the plugin's qdiscs are (``novanet_core.cni.bandwidth``).
    """
    plugin: dict[str, Any] = {"type": BINARY_NAME, "agentSocket": agent_socket, "capabilities": {"bandwidth": True}}
    if mtu:
        plugin["mtu"] = mtu
    return {
        "cniVersion": cni_version,
        "name": name,
        "plugins": [
            plugin,
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def _atomic_copy(src: Path, dst: Path, mode: int) -> None:
    # Runtimes may exec the binary at any moment: replace it by rename, never write it in place.
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    tmp.chmod(mode)
    os.replace(tmp, dst)


def install(bin_dir: str, conf_dir: str | None, agent_socket: str = "/run/novanet/cni.sock",
            binary: str | None = None) -> list[str]:
    src = Path(binary) if binary else built_binary()
    if not src.is_file():
        raise InstallError(f"{src}: the NovaNet CNI binary is not there (build it with `make cni`, "
                           "or give its path with --binary / NOVANET_CNI_BINARY)")
    written = []
    b = Path(bin_dir)
    b.mkdir(parents=True, exist_ok=True)
    target = b / BINARY_NAME
    _atomic_copy(src, target, 0o755)
    written.append(str(target))
    if conf_dir:
        c = Path(conf_dir)
        c.mkdir(parents=True, exist_ok=True)
        f = c / CONFLIST_NAME
        tmp = f.with_name(f".{f.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(conflist(agent_socket), indent=2) + "\n")
        os.replace(tmp, f)
        written.append(str(f))
    return written
