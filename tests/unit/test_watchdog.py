"""The dataplane watchdog: a restart of the dataplane (a new ``generation``) or its coming back
triggers one full resync; the agent's own start-up does not. In-process dataplane API on a real
socket answering ``dp.status`` as the dataplane does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from novanet_core.agent import watchdog
from novanet_core.agent.dataplane_client import DataplaneClient
from novanet_core.api.router import ApiRouter
from novanet_core.api.server import ApiServer


class Dataplane:
    """``generation`` is what ``dp.status`` answers; ``polls`` counts the watchdog's brief polls."""

    def __init__(self, path: str, generation: int):
        self.path, self.generation, self.polls = path, generation, 0
        self.srv: ApiServer | None = None

    def _status(self, p: dict[str, Any]) -> dict[str, Any]:
        self.polls += 1
        return {"datapath": "kernel", "capabilities": [], "generation": self.generation, "pid": 1}

    def start(self) -> None:
        r = ApiRouter()
        r.add("dp.status", self._status)
        self.srv = ApiServer(self.path, r, root_only=False)
        self.srv.start()

    def stop(self) -> None:
        if self.srv is not None:
            self.srv.stop()


def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


@pytest.fixture
def rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Dataplane, watchdog.DataplaneWatchdog, list[int]]]:
    monkeypatch.setattr(watchdog, "POLL_SECONDS", 0.02)
    dp = Dataplane(str(tmp_path / "dp.sock"), generation=1234)
    client = DataplaneClient(dp.path)
    stop = threading.Event()
    resyncs: list[int] = []
    wd = watchdog.DataplaneWatchdog(client, stop, lambda: resyncs.append(dp.generation))
    try:
        yield dp, wd, resyncs
    finally:
        stop.set()
        client.close()
        dp.stop()


def test_agent_start_is_not_a_reconnect_but_a_restart_is(rig) -> None:
    dp, wd, resyncs = rig
    dp.start()
    assert wd.baseline(wait=5.0)
    wd.pushed()  # the start-up's own full push
    wd.start()
    _until(lambda: dp.polls >= 6)
    assert resyncs == []  # the first polls see the dataplane the start-up pushed to
    assert wd.resyncs == 1
    dp.generation = 5678  # the dataplane restarted
    _until(lambda: resyncs == [5678])
    polls = dp.polls
    _until(lambda: dp.polls >= polls + 5)
    assert resyncs == [5678] and wd.resyncs == 2


def test_a_dataplane_not_there_at_start_is_resynced_when_it_answers(rig) -> None:
    dp, wd, resyncs = rig
    assert not wd.baseline(wait=0)
    wd.start()
    dp.start()
    _until(lambda: resyncs == [1234])
    polls = dp.polls
    _until(lambda: dp.polls >= polls + 5)
    assert resyncs == [1234] and wd.resyncs == 1
