"""A ping left running in the background while a test does something disruptive, read line by line.

Why not ``ping -c``/``-w`` and its summary: the test does not know in advance how long its
disruption takes, and stopping ping with a signal counts the request still in flight at that
moment as lost, which on a loaded machine turns into a flake. Why not ``-q``: the per-packet lines
are what tell which sequence numbers were answered; they are consumed by a thread as they arrive,
so the pipe never fills and stalls ping (at 100 lines/s a 64 KiB pipe fills in about 11 s).

So the claim a test makes is about sequence numbers: every request up to a mark taken after the
disruption was answered, or none after a mark was.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable

_REPLY = re.compile(r"icmp_seq=(\d+) ")
_NO_ANSWER = re.compile(r"no answer yet for icmp_seq=(\d+)")


class PingWatch:
    def __init__(self, popen: Callable[..., subprocess.Popen[str]], dst: str, interval: float = 0.01,
                 argv: list[str] | None = None) -> None:
        # -O: a line for every request that had no reply by the time the next one went out, so
        # the highest sequence number sent is known without waiting for the summary. ``argv``
        # runs another sender that prints the same lines (tests/support/udp_seq.py: UDP).
        self.proc = popen(*(argv or ["ping", "-n", "-O", "-i", str(interval), "-W", "1", dst]))
        self.replied: set[int] = set()
        self.highest = 0
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                if m := _NO_ANSWER.search(line):
                    self.highest = max(self.highest, int(m.group(1)))
                elif (m := _REPLY.search(line)) and "bytes from" in line:
                    seq = int(m.group(1))
                    self.replied.add(seq)
                    self.highest = max(self.highest, seq)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"ping: {what} (highest seq {self.highest}, "
                                         f"{len(self.replied)} replies): {''.join(self.lines[-5:])}")
                self._cond.wait(min(left, 0.2))

    def wait_replies(self, n: int, timeout: float = 20) -> None:
        """Wait until ``n`` requests have been answered (the path works before the disruption)."""
        self._wait(lambda: len(self.replied) >= n, timeout, f"fewer than {n} replies")

    def mark(self, ahead: int = 0, timeout: float = 30) -> int:
        """Wait until ``ahead`` more requests have been sent or answered; return that sequence number."""
        with self._cond:
            target = self.highest + ahead
        self._wait(lambda: self.highest >= target, timeout, f"seq {target} never seen")
        return target

    def wait_replied(self, upto: int, timeout: float = 20) -> None:
        """Wait until every request up to ``upto`` is answered (or ``timeout`` runs out)."""
        try:
            self._wait(lambda: all(s in self.replied for s in range(1, upto + 1)), timeout, "")
        except AssertionError:
            pass  # the caller asserts on lost(), which says which ones

    def lost(self, upto: int, start: int = 1) -> list[int]:
        with self._cond:
            return [s for s in range(start, upto + 1) if s not in self.replied]

    def replied_after(self, seq: int) -> list[int]:
        with self._cond:
            return sorted(s for s in self.replied if s > seq)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
