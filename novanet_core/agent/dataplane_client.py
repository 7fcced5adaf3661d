"""The agent's connection to the ``novanet-dataplane`` process (which owns the datapath)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError

log = logging.getLogger(__name__)


class DataplaneUnavailable(Exception):
    pass


class DataplaneClient:
    def __init__(self, socket_path: str):
        self.path = socket_path
        self._client = ApiClient(socket_path, timeout=30)
        self._lock = threading.Lock()
        self.connected = False

    def call(self, method: str, params: dict[str, Any] | None = None, wait: float = 0.0) -> Any:
        """Call the dataplane; with ``wait`` > 0 keep retrying that long while it is unreachable."""
        deadline = time.monotonic() + wait
        while True:
            try:
                with self._lock:
                    res = self._client.call(method, params)
                self.connected = True
                return res
            except Unreachable as e:
                self.connected = False
                if time.monotonic() >= deadline:
                    raise DataplaneUnavailable(f"dataplane at {self.path} unreachable: {e}") from None
                time.sleep(0.1)
            except ApiError as e:
                # The dataplane's API limits (api.*) apply to the agent too, but the agent's own
                # bulk work (a reconcile of a full map) must slow down, not fail half-way.
                if e.code not in ("rate_limited", "too_many_connections"):
                    raise
                d = e.details if isinstance(e.details, dict) else {}
                time.sleep(min(float(d.get("retryAfterSeconds") or 0.05), 1.0))

    def close(self) -> None:
        with self._lock:
            self._client.close()
