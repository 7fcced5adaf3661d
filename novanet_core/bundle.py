"""The debug bundle: everything the guide's "Collecting a Debug Bundle" list asks for, in one tarball."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from collections.abc import Sequence


class DebugBundle:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add_text(self, name: str, text: str) -> None:
        self.files[name] = text.encode()

    def add_command(self, name: str, argv: Sequence[str], timeout: float = 10.0) -> None:
        try:
            p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
            text = f"$ {' '.join(argv)}\n(exit {p.returncode})\n{p.stdout}{p.stderr}"
        except (OSError, subprocess.TimeoutExpired) as e:
            text = f"$ {' '.join(argv)}\nfailed: {e}\n"
        self.add_text(name, text)

    def write_tar(self, path: str) -> None:
        with tarfile.open(path, "w:gz") as tar:
            for name, data in sorted(self.files.items()):
                info = tarfile.TarInfo(f"novanet-debug/{name}")
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
