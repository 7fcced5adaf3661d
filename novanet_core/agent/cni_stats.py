"""CNI verb counts and durations, for ``novanetctl metrics`` (p50/p99 of recent calls) and Prometheus
(``novanet_cni_operations_total{operation,result}``, ``novanet_cni_operation_duration_seconds``)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
RECENT = 1000  # per operation, for the percentiles novanetctl prints


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class CniStats(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.recent: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=RECENT))
        self._hist = Histogram("novanet_cni_operation_duration_seconds",
                               "Agent-side duration of CNI operations (request received to answer)",
                               ["operation"], buckets=BUCKETS, registry=None)
        self._count = Counter("novanet_cni_operations", "CNI operations the agent answered, by result",
                              ["operation", "result"], registry=None)

    def record(self, operation: str, seconds: float, ok: bool) -> None:
        result = "success" if ok else "error"
        with self._lock:
            self.counts[(operation, result)] += 1
            if ok:
                self.recent[operation].append(seconds)
        self._hist.labels(operation).observe(seconds)
        self._count.labels(operation, result).inc()

    def summary(self) -> dict[str, Any]:
        """Per operation: success/error counts and p50/p99 milliseconds of the recent successes."""
        with self._lock:
            ops = sorted({op for op, _ in self.counts} | set(self.recent))
            out = {}
            for op in ops:
                vals = sorted(self.recent.get(op, ()))
                p50, p99 = percentile(vals, 0.5), percentile(vals, 0.99)
                out[op] = {"success": self.counts[(op, "success")], "error": self.counts[(op, "error")],
                           "p50_ms": None if p50 is None else round(p50 * 1e3, 2),
                           "p99_ms": None if p99 is None else round(p99 * 1e3, 2), "samples": len(vals)}
            return out

    def collect(self) -> Iterator[Any]:
        yield from self._hist.collect()
        yield from self._count.collect()
