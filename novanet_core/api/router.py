"""Method table for a local API server; plugins add methods via ``novanet_register_api``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], Any]


class ApiRouter:
    def __init__(self) -> None:
        self._methods: dict[str, tuple[Handler, bool, str]] = {}

    def add(self, name: str, handler: Handler, stream: bool = False, doc: str = "") -> None:
        """Register ``handler(params) -> result``; with ``stream=True`` it returns an iterator of items."""
        if name in self._methods:
            raise ValueError(f"API method {name!r} registered twice")
        self._methods[name] = (handler, stream, doc or (handler.__doc__ or "").strip().split("\n")[0])

    def get(self, name: str) -> tuple[Handler, bool, str] | None:
        return self._methods.get(name)

    def methods(self) -> dict[str, str]:
        return {n: d for n, (_, _, d) in sorted(self._methods.items())}
