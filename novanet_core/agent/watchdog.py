"""The dataplane watchdog: either process may restart, so the agent polls the dataplane and
re-pushes everything it owns when the dataplane comes back or is a new process (its
``generation`` changed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from novanet_core.agent.dataplane_client import DataplaneClient, DataplaneUnavailable

log = logging.getLogger("novanet.agent")

POLL_SECONDS = 0.5


class DataplaneWatchdog:
    def __init__(self, dataplane: DataplaneClient, stop: threading.Event, resync: Callable[[], None]):
        self.dataplane, self.stop, self.resync = dataplane, stop, resync
        self.generation = 0
        self.resyncs = 0  # completed full pushes to the dataplane (first connect, restarts)

    def baseline(self, wait: float) -> bool:
        """Note the dataplane the agent's start-up is about to push to (False: none answered).

        Taken before that push, so that a dataplane restarting at any point after it still has
        another generation at the first poll; without it the first poll took the agent's own start
        for a reconnect and repeated the whole push at once (at 30,000 remote pods, events queued
        behind it for seconds)."""
        try:
            st = self.dataplane.call("dp.status", {"brief": True}, wait=wait)
        except DataplaneUnavailable:
            return False
        self.generation = st.get("generation", 0)
        return True

    def pushed(self) -> None:
        """The start-up's full push reached the baseline's dataplane: it counts as the first."""
        self.resyncs += 1

    def start(self) -> None:
        threading.Thread(target=self.run, name="dataplane-monitor", daemon=True).start()

    def run(self) -> None:
        was = self.dataplane.connected
        while not self.stop.wait(POLL_SECONDS):
            try:
                st = self.dataplane.call("dp.status", {"brief": True})
                now = True
                gen = st.get("generation", 0)
            except DataplaneUnavailable:
                now, gen = False, self.generation
            except Exception as e:  # an error answer: still connected, and the watchdog must go on
                log.error("dataplane status failed: %s: %s", type(e).__name__, e)
                continue
            if now and (not was or gen != self.generation):
                log.info("dataplane (re)connected (generation %s): resyncing", gen)
                try:
                    self.resync()
                except Exception as e:
                    # This thread dying (it did, on a rate-limited call) would end every later
                    # resync; log, and try the whole resync again on the next round.
                    log.exception("dataplane resync failed (%s: %s); retrying", type(e).__name__, e)
                    continue
                self.resyncs += 1
            self.generation = gen
            was = now
