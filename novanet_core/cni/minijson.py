"""JSON for the CNI client without importing ``json``.

``json`` pulls in ``re`` and ``enum`` (~8 ms of imports, paid on every pod ADD/DEL because the
runtime execs the plugin each time). The C accelerator ``_json`` that ``json`` itself uses has the
scanner and encoder; this module wires them up with the same settings as ``json.loads`` /
``json.dumps(separators=(",", ":"))``.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_Ctx())
_WS = " \t\n\r"


def loads(s: str) -> Any:
    """Decode one JSON document; raises ValueError (like json.JSONDecodeError) on bad input."""
    i = 0
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration as e:
        raise ValueError(f"Expecting value: line 1 column {e.value + 1} (char {e.value})") from None
    except RecursionError:
        # The full json module would recurse just as deep: a clear error instead of a traceback.
        raise ValueError("invalid JSON: nested too deeply") from None
    except Exception:
        # Bad input only: let the full json module (imported on this error path alone) produce
        # its precise message; the bare C scanner cannot always raise its error type by itself.
        import json

        json.loads(s)
        raise ValueError("invalid JSON") from None
    finally:
        _Ctx.memo.clear()
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"Extra data: char {end}")
    return obj


_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(obj: Any) -> str:
    return "".join(_encode(obj, 0))
