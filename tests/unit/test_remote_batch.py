"""The agent's changes to remote-pod entries: collected and sent as dp.remote.batch (a full sync,
a reconcile's removals), or as the single-entry requests (one pod's change)."""

from __future__ import annotations

from typing import Any

import pytest

from novanet_core.agent.remote_batch import RemoteBatch


def _recorder() -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    calls: list[tuple[str, dict[str, Any]]] = []
    return calls, lambda method, params: calls.append((method, params))


def _rem(i: int) -> dict[str, Any]:
    return {"ip": f"10.41.0.{i}", "identity": 300 + i, "node_ip": "172.20.0.2", "namespace": "ns", "pod": f"p{i}"}


def test_a_full_sync_goes_in_batches_of_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RemoteBatch, "SIZE", 4)
    calls, send = _recorder()
    b = RemoteBatch(send)
    for i in range(9):  # as NodeSync.sync_remotes does it
        b.upsert.append(_rem(i))
        if b.full():
            b.flush()
    b.flush()
    b.flush()  # nothing left: nothing sent
    assert [(m, len(p["upsert"])) for m, p in calls] == [("dp.remote.batch", 4), ("dp.remote.batch", 4),
                                                         ("dp.remote.batch", 1)]
    assert [r["ip"] for _, p in calls for r in p["upsert"]] == [f"10.41.0.{i}" for i in range(9)]


def test_one_pods_change_uses_the_single_requests_deletes_first() -> None:
    calls, send = _recorder()
    b = RemoteBatch(send)
    b.upsert.append(_rem(9))
    b.delete.append("10.41.0.1")
    b.send_single()
    assert calls == [("dp.remote.delete", {"ip": "10.41.0.1"}), ("dp.remote.upsert", {"remote": _rem(9)})]


def test_removals_are_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RemoteBatch, "SIZE", 2)
    calls, send = _recorder()
    RemoteBatch(send).delete_all(["a", "b", "c"])
    RemoteBatch(send).delete_all([])
    assert calls == [("dp.remote.batch", {"upsert": [], "delete": ["a", "b"]}),
                     ("dp.remote.batch", {"upsert": [], "delete": ["c"]})]
