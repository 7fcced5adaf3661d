"""The debug bundle: everything the guide's "Collecting a Debug Bundle" list asks for, in one tarball.

Each item is produced on its own: one that fails (a daemon down, a command missing, a plugin that
raises) records its error in its file and in ``index.json``, and the bundle is written anyway.
Items are named after the guide's numbered list (``01-novanet-pods.txt`` ... ``11-events.txt``);
whoever can produce an item best provides it (the Kubernetes state source provides the
``kubectl`` ones when it is the configured source), and the node's equivalents fill the rest.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# The guide's list: item number -> (file stem, what it holds)
GUIDE_ITEMS: dict[int, tuple[str, str]] = {
    1: ("novanet-pods", "NovaNet pod status (kubectl get pods -n nova-system -o wide)"),
    2: ("agent-logs", "agent logs, last 500 lines"),
    3: ("dataplane-logs", "dataplane logs, last 500 lines"),
    4: ("status", "novanetctl status"),
    5: ("nodes", "node info (kubectl get nodes -o wide)"),
    6: ("kernel-btf", "kernel version and BTF (uname -r, ls -la /sys/kernel/btf/vmlinux)"),
    7: ("bpffs", "BPF filesystem contents (ls -la /sys/fs/bpf/novanet/)"),
    8: ("links-routes", "network interfaces and routes (ip link show, ip route show)"),
    9: ("tunnels", "tunnel interfaces (ip link show type geneve / vxlan)"),
    10: ("networkpolicies", "NetworkPolicies (kubectl get networkpolicy -A -o yaml)"),
    11: ("events", "events (kubectl get events -n nova-system)"),
}


def item_name(number: int, ext: str = "txt") -> str:
    return f"{number:02d}-{GUIDE_ITEMS[number][0]}.{ext}"


class DebugBundle:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.index: list[dict[str, Any]] = []
        self.items: dict[int, str] = {}  # guide item -> file that holds it

    def add_text(self, name: str, text: str) -> None:
        self.files[name] = text.encode()

    def add_command(self, name: str, argv: Sequence[str], timeout: float = 10.0) -> None:
        try:
            p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
            text = f"$ {' '.join(argv)}\n(exit {p.returncode})\n{p.stdout}{p.stderr}"
        except (OSError, subprocess.TimeoutExpired) as e:
            text = f"$ {' '.join(argv)}\nfailed: {e}\n"
        self.add_text(name, text)

    def add_item(self, name: str, produce: Callable[[], Any], item: int | None = None, source: str = "") -> bool:
        """Put what ``produce()`` returns (text, bytes, or anything JSON) in ``name``; an exception
        becomes the file's content and an error in the index, never the bundle's end."""
        t0 = time.monotonic()
        entry: dict[str, Any] = {"file": name, "item": item, "source": source}
        try:
            v = produce()
            data = v if isinstance(v, bytes) else v.encode() if isinstance(v, str) else \
                (json.dumps(v, indent=2, default=str) + "\n").encode()
            entry["ok"] = True
        except Exception as e:  # an item's failure is recorded, the others still run
            data = f"failed: {type(e).__name__}: {e}\n\n{traceback.format_exc()}".encode()
            entry.update(ok=False, error=f"{type(e).__name__}: {e}")
        entry["seconds"] = round(time.monotonic() - t0, 3)
        self.files[name] = data
        self.index = [x for x in self.index if x["file"] != name] + [entry]
        if item is not None and entry["ok"]:
            self.items[item] = name
        return bool(entry["ok"])

    def has_item(self, item: int) -> bool:
        return item in self.items

    def write_tar(self, path: str) -> None:
        files = dict(self.files)
        files["index.json"] = (json.dumps({
            "created": time.time(),
            "guide_items": {str(n): {"what": what, "file": self.items.get(n)} for n, (_, what) in GUIDE_ITEMS.items()},
            "files": self.index,
        }, indent=2) + "\n").encode()
        with tarfile.open(path, "w:gz") as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(f"novanet-debug/{name}")
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
