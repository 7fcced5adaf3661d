"""Validation errors as (field path, message) pairs, worded the same for every NovaNet config.

pydantic's messages are kept, with its ``Value error, `` prefix dropped, except for the two that
a user reads most: a key the model does not know and one that is missing.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def field_errors(e: ValidationError, unknown: str = "unknown key",
                 missing: str | None = "is required") -> list[tuple[tuple[Any, ...], str]]:
    """``(loc, message)`` for each error of ``e``; ``missing=None`` keeps pydantic's own wording."""
    out = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown
        elif err["type"] == "missing" and missing is not None:
            msg = missing
        out.append((tuple(err["loc"]), msg))
    return out
