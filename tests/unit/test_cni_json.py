"""The C client's JSON scanner (cni/json.c) against Python's json, fuzzed with hypothesis.

The scanner must accept exactly what the reference client's parser accepts (so that both clients
give the same answer to the same stdin), and what it forwards (the compacted text) must mean to
the agent's Python json exactly what the runtime's text meant. It is compiled here as a shared
library from the same source the binary is built from and called through ctypes.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from novanet_core.cni import minijson

ROOT = Path(__file__).resolve().parents[2]
JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT = range(6)


class Val(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("p", ctypes.c_void_p), ("n", ctypes.c_size_t)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = tmp_path_factory.mktemp("cnijson") / "libcnijson.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(so), str(ROOT / "cni" / "json.c")],
                   check=True)
    lib = ctypes.CDLL(str(so))
    lib.json_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Val), ctypes.POINTER(ctypes.c_size_t),
                               ctypes.POINTER(ctypes.c_char_p)]
    lib.json_get.argtypes = [ctypes.POINTER(Val), ctypes.c_char_p, ctypes.POINTER(Val)]
    lib.json_next.argtypes = [ctypes.POINTER(Val), ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Val)]
    lib.json_str.argtypes = [ctypes.POINTER(Val), ctypes.c_char_p, ctypes.c_size_t]
    lib.json_str.restype = ctypes.c_long
    lib.json_is_int.argtypes = [ctypes.POINTER(Val)]
    lib.json_compact.argtypes = [ctypes.POINTER(Val), ctypes.c_char_p]
    lib.json_compact.restype = ctypes.c_size_t
    return lib


REJECT = object()


def py_parse(raw: bytes) -> Any:
    """What the reference client makes of these bytes on stdin."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return REJECT
    try:
        return minijson.loads(text)
    except (ValueError, RecursionError):
        return REJECT


def same(a: Any, b: Any) -> bool:
    # json.dumps makes NaN comparable and keeps -0.0 apart from 0.0
    return json.dumps(a) == json.dumps(b) and type(a) is type(b)


def text_of(buf: ctypes.Array, v: Val) -> bytes:
    return ctypes.string_at(v.p, v.n)


def py_type(v: Any) -> int:
    if v is None:
        return JSON_NULL
    if isinstance(v, bool):
        return JSON_BOOL
    if isinstance(v, (int, float)):
        return JSON_NUMBER
    if isinstance(v, str):
        return JSON_STRING
    return JSON_ARRAY if isinstance(v, list) else JSON_OBJECT


def check_value(lib: Any, buf: Any, v: Val, expected: Any, depth: int = 0) -> None:
    assert v.type == py_type(expected)
    assert bool(lib.json_is_int(ctypes.byref(v))) == (isinstance(expected, int) and not isinstance(expected, bool))
    out = ctypes.create_string_buffer(v.n + 1)
    n = lib.json_compact(ctypes.byref(v), out)
    compact = out.raw[:n]
    assert same(py_parse(compact), expected)
    if isinstance(expected, str):
        dec = ctypes.create_string_buffer(v.n * 2 + 8)
        got = lib.json_str(ctypes.byref(v), dec, len(dec))
        assert dec.raw[:got] == expected.encode("utf-8", "surrogatepass")
    if depth > 3:
        return
    if isinstance(expected, list):
        it, item, seen = ctypes.c_void_p(), Val(), 0
        while lib.json_next(ctypes.byref(v), ctypes.byref(it), ctypes.byref(item)):
            check_value(lib, buf, item, expected[seen], depth + 1)
            seen += 1
        assert seen == len(expected)
    if isinstance(expected, dict):
        for key, val in expected.items():
            kb = key.encode("utf-8", "surrogatepass")
            if b"\0" in kb or len(kb) > 200:
                continue  # the client only looks up its own short keys
            member = Val()
            assert lib.json_get(ctypes.byref(v), kb, ctypes.byref(member)) == 0, key
            check_value(lib, buf, member, val, depth + 1)
        assert lib.json_get(ctypes.byref(v), b"\x01never a key", ctypes.byref(Val())) != 0


def check(lib: Any, raw: bytes) -> None:
    expected = py_parse(raw)
    buf = ctypes.create_string_buffer(raw, len(raw))
    root, at, err = Val(), ctypes.c_size_t(), ctypes.c_char_p()
    rc = lib.json_parse(buf, len(raw), ctypes.byref(root), ctypes.byref(at), ctypes.byref(err))
    if expected is REJECT:
        assert rc != 0, f"C accepted what Python refuses: {raw!r}"
        assert err.value and at.value <= len(raw)
        return
    assert rc == 0, f"C refused what Python accepts: {raw!r} ({err.value!r} at {at.value})"
    check_value(lib, buf, root, expected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


@st.composite
def documents(draw: Any) -> bytes:
    v = draw(json_values)
    indent = draw(st.sampled_from([None, 0, 1, "\t", " \r\n "[0:draw(st.integers(0, 3))] or None]))
    seps = draw(st.sampled_from([None, (",", ":"), (" , ", " : "), (",\n", ":\t")]))
    text = json.dumps(v, indent=indent, separators=seps, ensure_ascii=draw(st.booleans()))
    ws = st.text(alphabet=" \t\r\n", max_size=3)
    return (draw(ws) + text + draw(ws)).encode("utf-8", "surrogatepass")


JUNK = list(b'{}[]",:0123456789.eE+-\\/ntrfalsuNaIiy \t\n\x00\x1f\x7f') + [0xC3, 0xA9, 0xED, 0xA0, 0x80, 0xFF, 0xF0]


@st.composite
def mutated(draw: Any) -> bytes:
    b = bytearray(draw(documents()))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["del", "ins", "set"]))
        i = draw(st.integers(0, len(b)))
        c = draw(st.sampled_from(JUNK))
        if op == "ins":
            b.insert(i, c)
        elif b and i < len(b):
            if op == "del":
                del b[i]
            else:
                b[i] = c
    return bytes(b)


junk = st.lists(st.sampled_from(JUNK), max_size=30).map(bytes)

CORNERS = [b"", b" ", b"NaN", b"-Infinity", b"-NaN", b"01", b"1.", b"1e", b"1e+", b".5", b"-", b"\xef\xbb\xbf{}",
           b'"\\u12"', b'"\\uD800"', b'"\\ud83d\\ude00"', b'"\x7f"', b'"\x1f"', b'"\\x"', b"[1,]", b'{"a":1,}',
           b'{"a" 1}', b"{1:2}", b'{"a":1}{}', b"nul", b"true false", b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"',
           b'"\xc0\xaf"', b'"\xe0\x80\xaf"', b"[" * 2000 + b"]" * 2000, b"[" * 800 + b"]" * 800, b"1E400", b"-0",
           b'{"a":1,"a":2}', b'"a\\/b"', b"[1 2]", b"\t\n\r 7 \n"]


@pytest.mark.parametrize("raw", CORNERS)
def test_corner_cases_agree_with_python(lib, raw):
    check(lib, raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents(), mutated(), junk))
@example(b'{"cniVersion":"1.0.0","mtu":1500}')
def test_fuzzed_input_agrees_with_python(lib, raw):
    check(lib, raw)
