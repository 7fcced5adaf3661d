"""Reading deferred-DEL tombstones: one still being written is left for the next pass, garbage
is removed, good ones are returned in name order."""

from __future__ import annotations

import json
import os

from novanet_core.agent import tombstones


def test_half_written_tombstone_is_kept_until_the_grace_time_then_removed(tmp_path) -> None:
    f = tmp_path / "abc_eth0.json"
    f.write_text("")  # created, not written yet
    now = f.stat().st_mtime
    assert tombstones.ready(tmp_path, now=now + 1) == []
    assert f.exists()
    f.write_text('{"containerID": "ab')  # cut short
    assert tombstones.ready(tmp_path, now=now + 1) == [] and f.exists()
    os.utime(f, (now - tombstones.WRITE_GRACE_SECONDS - 1,) * 2)
    assert tombstones.ready(tmp_path, now=now) == []
    assert not f.exists()


def test_good_tombstones_in_name_order_and_non_objects_removed(tmp_path) -> None:
    for cid in ("b", "a"):
        (tmp_path / f"{cid}_eth0.json").write_text(json.dumps({"containerID": cid, "ifname": "eth0"}))
    (tmp_path / "c_eth0.json").write_text("[1, 2]")
    (tmp_path / "d_eth0.json").write_text(json.dumps({"containerID": 5, "ifname": "eth0"}))
    (tmp_path / "notes.txt").write_text("not a tombstone")
    got = tombstones.ready(tmp_path)
    assert [req["containerID"] for _, req in got] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_eth0.json", "b_eth0.json", "notes.txt"]


def test_missing_directory_is_nothing_to_do(tmp_path) -> None:
    assert tombstones.ready(tmp_path / "pending-del") == []
