"""Deferred CNI DELs: the tombstones the CNI client leaves in ``<CNI socket dir>/pending-del``
when the agent does not answer (the guide's "Pod deletion: Deferred (cleanup on reconcile)").

The agent reads them at start-up and then all the time it runs: a DEL that found the socket not
yet listening (between the start-up pass and the socket's bind) would otherwise wait for the
agent's next restart, its endpoint, address and links leaked until then.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("novanet.agent")

# The clients create the file and then write it (both the Python and the C client): a reader in
# between sees it empty or cut short. Only a file this old that still does not parse is garbage.
WRITE_GRACE_SECONDS = 10.0


def directory(cni_socket: str) -> Path:
    return Path(os.path.dirname(cni_socket)) / "pending-del"


def ready(d: Path, now: float | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The tombstones in ``d`` that can be carried out, oldest name first; garbage (unparsable
    after the grace time, or not a JSON object) is logged and removed."""
    out: list[tuple[Path, dict[str, Any]]] = []
    try:
        names = sorted(e.name for e in os.scandir(d) if e.name.endswith(".json"))
    except FileNotFoundError:
        return out
    now = time.time() if now is None else now
    for name in names:
        f = d / name
        try:
            text, mtime = f.read_text(), f.stat().st_mtime
        except FileNotFoundError:  # carried out by another pass meanwhile
            continue
        try:
            req = json.loads(text)
        except ValueError as e:
            if now - mtime < WRITE_GRACE_SECONDS:
                continue  # still being written: the next pass reads it
            log.error("deferred DEL %s is not valid JSON (%s); removing it", name, e)
            f.unlink(missing_ok=True)
            continue
        if not isinstance(req, dict) or not isinstance(req.get("containerID"), str) or not isinstance(
                req.get("ifname"), str):
            log.error("deferred DEL %s has no containerID/ifname; removing it", name)
            f.unlink(missing_ok=True)
            continue
        out.append((f, req))
    return out
