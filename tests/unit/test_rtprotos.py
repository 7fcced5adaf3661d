"""`proto novanet`: the agent registers the names of NovaNet's route protocol numbers for iproute2."""

from __future__ import annotations

import os
from pathlib import Path

from novanet_core.agent import rtprotos
from novanet_core.protocols import RTPROT_NOVANET, RTPROT_NOVANET_NAME


def test_writes_once_and_names_the_number(tmp_path: Path) -> None:
    assert rtprotos.ensure_registered(str(tmp_path))
    f = tmp_path / rtprotos.FILE_NAME
    lines = [ln.split() for ln in f.read_text().splitlines() if ln and not ln.startswith("#")]
    assert [str(RTPROT_NOVANET), RTPROT_NOVANET_NAME] in lines
    mtime = f.stat().st_mtime_ns
    assert rtprotos.ensure_registered(str(tmp_path)) and f.stat().st_mtime_ns == mtime  # unchanged: not rewritten
    f.write_text("99 something-else\n")
    assert rtprotos.ensure_registered(str(tmp_path)) and f.read_text() == rtprotos.content()
    assert [p.name for p in tmp_path.iterdir()] == [rtprotos.FILE_NAME]  # no temporary file left


def test_missing_or_unwritable_directory_is_not_fatal(tmp_path: Path) -> None:
    assert not rtprotos.ensure_registered(str(tmp_path / "absent"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anyway
            assert not rtprotos.ensure_registered(str(ro))
    finally:
        ro.chmod(0o700)
