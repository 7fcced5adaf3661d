"""Wire protocol of NovaNet's unix sockets (documented in docs/architecture.md#local-api).

One JSON object per line, UTF-8. Version 1:

  request   {"v": 1, "id": 7, "method": "cni.add", "params": {...}}
  response  {"v": 1, "id": 7, "result": ...}
         or {"v": 1, "id": 7, "error": {"code": "invalid_params", "message": "...", "details": ...}}
  stream    {"v": 1, "id": 7, "item": ...}  (repeated) then {"v": 1, "id": 7, "end": true}

A server answers a request whose ``v`` it does not speak with error ``unsupported_version`` and
the versions it does speak, so either side can be upgraded first.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_LINE = 16 * 1024 * 1024


class ApiError(Exception):
    """An error a handler returns to the caller (never a traceback)."""

    def __init__(self, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details

    def to_dict(self) -> dict[str, Any]:
        d = {"code": self.code, "message": self.message}
        if self.details is not None:
            d["details"] = self.details
        return d


def encode(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
