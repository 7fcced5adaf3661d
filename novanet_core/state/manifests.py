"""State source fed by a directory of Kubernetes-style YAML manifests (the lab's source).

Every ``*.yaml``/``*.yml``/``*.json`` file in the directory may hold several documents. The
directory is re-scanned when a file's mtime/size changes (cheap polling: no inotify in the
stdlib, and a lab directory is small). An optional ``VERSION`` file holds an integer the writer
bumps after each change; the source reports it so that a writer (``novanet lab apply``) can wait
until every agent has taken the change in.

A file or object that does not parse is logged with its field path and skipped; the objects it
held before stay as they were, so a typo never tears down working state.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from novanet_core.state.model import ClusterState, ObjectError, StateEvent, parse_object

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestSource:
    def __init__(self, directory: str | os.PathLike[str], poll_interval: float = 0.05):
        self.dir = Path(directory)
        self.poll_interval = poll_interval
        self._sig: dict[str, tuple[int, int, int]] = {}
        self._by_file: dict[str, dict[tuple[str, str], Any]] = {}
        self._version = -1
        self.errors: list[str] = []

    # -- scanning
    def _signature(self) -> dict[str, tuple[int, int, int]]:
        # The inode is part of it: writers replace files by rename, and a rewrite of the same size
        # within one timestamp tick would otherwise look unchanged.
        sig = {}
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return {}
        for e in entries:
            if e.name.endswith(SUFFIXES) or e.name == "VERSION":
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                sig[e.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return sig

    def _read_version(self) -> int:
        try:
            return int((self.dir / "VERSION").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _load_file(self, name: str) -> dict[tuple[str, str], Any]:
        old = self._by_file.get(name, {})
        try:
            docs = list(yaml.safe_load_all((self.dir / name).read_text()))
        except FileNotFoundError:
            return {}
        except (yaml.YAMLError, RecursionError) as e:
            # RecursionError: PyYAML's composer recurses per nesting level. Left to propagate, it
            # stopped the scan half-way, and files changed in the same pass were never loaded.
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            self._error(f"{name}: not valid YAML ({why}); keeping its previous objects")
            return old
        out: dict[tuple[str, str], Any] = {}
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
            for obj in items or []:
                try:
                    parsed = parse_object(obj)
                except ObjectError as e:
                    self._error(f"{name} (document {i}): {e}")
                    meta = obj.get("metadata") if isinstance(obj, dict) else None
                    if isinstance(meta, dict):
                        k = (str(obj.get("kind")), _key(obj.get("kind"), meta))
                        if k in old:
                            out[k] = old[k]
                    continue
                out[(type(parsed).__name__, parsed.key)] = parsed
        return out

    def _error(self, msg: str) -> None:
        log.error("manifest rejected: %s", msg)
        self.errors = (self.errors + [msg])[-50:]

    def _merged(self) -> dict[tuple[str, str], Any]:
        merged: dict[tuple[str, str], Any] = {}
        for name in sorted(self._by_file):
            merged.update(self._by_file[name])
        return merged

    def _rescan(self) -> tuple[bool, int]:
        """Reload changed files; (anything changed, the VERSION those files are at least at).

        VERSION is read before the directory: the writer bumps it only after writing the files
        it covers, so a scan that follows the read sees all of them. Read after the scan, it
        could name a version whose last files were written while the scan was running.
        """
        version = self._read_version()
        sig = self._signature()
        if sig == self._sig:
            return False, version
        changed = {n for n in set(sig) | set(self._sig) if sig.get(n) != self._sig.get(n)}
        self._sig = sig
        for n in changed:
            if n == "VERSION":
                continue
            if n in sig:
                self._by_file[n] = self._load_file(n)
            else:
                self._by_file.pop(n, None)
        return True, version

    # -- StateSource protocol
    def snapshot(self) -> ClusterState:
        _, version = self._rescan()
        st = ClusterState()
        for (kind, _), obj in self._merged().items():
            st.table(kind)[obj.key] = obj
        self._version = st.version = version
        self._last = self._merged()
        return st

    def watch(self, stop: threading.Event) -> Iterator[StateEvent]:
        while not stop.is_set():
            changed, version = self._rescan()
            if changed:
                now = self._merged()
                for k, obj in now.items():
                    if k not in self._last:
                        yield StateEvent("ADDED", k[0], obj)
                    elif self._last[k] != obj:
                        yield StateEvent("MODIFIED", k[0], obj)
                for k, obj in self._last.items():
                    if k not in now:
                        yield StateEvent("DELETED", k[0], obj)
                self._last = now
            # Also when no file changed: a VERSION bumped between the read and the scan was
            # reported one pass too low, and this pass, with nothing left to load, reports it.
            if changed or version != self._version:
                self._version = version
                yield StateEvent("SYNCED", "", None, version=version)
            stop.wait(self.poll_interval)


def _key(kind: Any, meta: dict[str, Any]) -> str:
    if kind in ("Node", "Namespace"):
        return str(meta.get("name"))
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
