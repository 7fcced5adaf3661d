from __future__ import annotations

import os

from novanet_core.bpf import ktree


def test_tree_is_built_once_and_rebuilt_when_stale(tmp_path) -> None:
    t = str(tmp_path / "kt")
    ktree.ensure(t)
    assert os.path.islink(os.path.join(t, "include/uapi/linux/ip.h"))
    assert "bcc/bpf.h" in open(os.path.join(t, "include/uapi/linux/bpf.h")).read()
    assert "LINUX_VERSION_CODE" in open(os.path.join(t, "include/linux/version.h")).read()
    m = os.stat(os.path.join(t, ktree.STAMP)).st_mtime_ns
    ktree.ensure(t)
    assert os.stat(os.path.join(t, ktree.STAMP)).st_mtime_ns == m  # up to date: untouched
    with open(os.path.join(t, ktree.STAMP), "w") as f:
        f.write("old recipe")
    ktree.ensure(t)
    assert open(os.path.join(t, ktree.STAMP)).read() == ktree._stamp_text()


def test_version_code() -> None:
    assert ktree._version_code("6.18.44-fc-v782") == (6 << 16) + (18 << 8) + 44
    assert ktree._version_code("5.4.300") == (5 << 16) + (4 << 8) + 255
