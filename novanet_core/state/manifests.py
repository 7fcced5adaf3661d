"""State source fed by a directory of Kubernetes-style YAML manifests (the lab's source).

Every ``*.yaml``/``*.yml``/``*.json`` file in the directory may hold several documents. The
directory is re-scanned when a file's mtime/size changes (cheap polling: no inotify in the
stdlib, and a lab directory is small); only the files that changed are re-read, and only their
objects are compared with what was reported, so a change costs its files, not the whole set.
When two files hold the same object, the file last in name order wins. An optional ``VERSION`` file holds an integer the writer
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
        # (kind, key) -> the files that hold it: the last of them in name order wins, and a change
        # is diffed over the keys of the files that changed, not over every object (a lab with
        # 10,000 Services spent ~100 ms per change comparing them all).
        self._holders: dict[tuple[str, str], set[str]] = {}
        self._last: dict[tuple[str, str], Any] = {}
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

    def _rescan(self) -> tuple[dict[str, dict[tuple[str, str], Any]] | None, int]:
        """Reload changed files; (the previous objects of each file that changed, None when none
        did; the VERSION those files are at least at).

        VERSION is read before the directory: the writer bumps it only after writing the files
        it covers, so a scan that follows the read sees all of them. Read after the scan, it
        could name a version whose last files were written while the scan was running.
        """
        version = self._read_version()
        sig = self._signature()
        if sig == self._sig:
            return None, version
        changed = {n for n in set(sig) | set(self._sig) if sig.get(n) != self._sig.get(n)}
        self._sig = sig
        before: dict[str, dict[tuple[str, str], Any]] = {}
        for n in sorted(changed - {"VERSION"}):
            old = before[n] = self._by_file.get(n, {})
            new = self._load_file(n) if n in sig else {}  # a file that does not parse keeps its objects
            if n in sig:
                self._by_file[n] = new
            else:
                self._by_file.pop(n, None)
            for k in old.keys() - new.keys():
                holders = self._holders[k]
                holders.discard(n)
                if not holders:
                    del self._holders[k]
            for k in new.keys() - old.keys():
                self._holders.setdefault(k, set()).add(n)
        return before, version

    def _current(self, k: tuple[str, str]) -> Any:
        holders = self._holders.get(k)
        return self._by_file[max(holders)][k] if holders else None

    def _diff(self, before: dict[str, dict[tuple[str, str], Any]]) -> Iterator[StateEvent]:
        """The events that take ``_last`` to the merged objects now, over the keys of the files in
        ``before`` (the only ones that can differ): additions and changes in file and document
        order, deletions last."""
        keys = dict.fromkeys(k for n in sorted(before) for k in self._by_file.get(n, ()))
        keys.update(dict.fromkeys(k for n in sorted(before) for k in before[n]))
        gone = []
        for k in keys:
            obj, last = self._current(k), self._last.get(k)
            if obj is None:
                if last is not None:
                    gone.append((k, last))
                continue
            if last is None or last != obj:
                self._last[k] = obj
                yield StateEvent("ADDED" if last is None else "MODIFIED", k[0], obj)
        for k, last in gone:
            del self._last[k]
            yield StateEvent("DELETED", k[0], last)

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
            before, version = self._rescan()
            changed = before is not None
            if before:
                yield from self._diff(before)
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
