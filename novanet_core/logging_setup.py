"""Logging for NovaNet's daemons: one line per record, key facts first (grep-friendly)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str, program: str) -> None:
    lvl = {"warn": "WARNING"}.get(level, level.upper())
    logging.basicConfig(
        level=getattr(logging, lvl, logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s {program} %(levelname)s %(name)s: %(message)s",
    )
