"""Logging for NovaNet's daemons: one line per record, key facts first (grep-friendly).

Each daemon also keeps its last :data:`RECENT_LINES` lines in memory (:data:`RECENT`), served as
``logs.tail`` on its socket, so ``novanetctl debug-bundle`` gets both daemons' logs wherever their
stderr goes (a file in the lab, a container log on a node).
"""

from __future__ import annotations

import collections
import logging
import sys

RECENT_LINES = 2000
RECENT: collections.deque[str] = collections.deque(maxlen=RECENT_LINES)


class _RecentHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            RECENT.append(self.format(record))
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


def setup_logging(level: str, program: str) -> None:
    lvl = {"warn": "WARNING"}.get(level, level.upper())
    fmt = f"%(asctime)s {program} %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, lvl, logging.INFO), stream=sys.stderr, format=fmt)
    root = logging.getLogger()
    if not any(isinstance(h, _RecentHandler) for h in root.handlers):
        h = _RecentHandler()
        h.setFormatter(logging.Formatter(fmt))
        root.addHandler(h)


def recent(lines: int = 500) -> list[str]:
    return list(RECENT)[-lines:] if lines else []
