"""Hypothesis strategies for hostile input: arbitrary JSON values, and valid documents with a few
fields broken.

Purely random documents rarely get past the first type check, so most strategies start from a
valid seed (a real manifest, config or spec) and apply one to three mutations at random places:
replace a value by an arbitrary one or by one of another type, delete a key, add an unknown key, change a value's type,
grow a list, or substitute a near-miss string (an address one bit off, a port one past the end).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

# Strings that past bugs and other projects' CVEs say parsers get wrong.
TRICKY_STRINGS = (
    "", " ", "\x00", "\n", "a" * 300, "../../etc/passwd", "/", "-1", "0", "1e9", "0x10", "NaN", "null", "true",
    "10.0.0.1/33", "10.0.0.256", "10.0.0.1", "10.0.0.0/8", "::1", "fe80::1%eth0", "0.0.0.0/0", "1.2.3", "65536",
    "TCP", "tcp", "SCTP", "ICMP", "In", "Exists", "Ingress", "egress", "kube-system", "\u00e9t\u00e9", "\u202e",
    "a" * 16, "x" * 64, "eth0", "lo", "${HOME}", "%s%n", "{{ .Values }}", "*", "a b", "a=b;c", "=",
)

# One value of every JSON type (and the ones YAML adds: a float that is an int, a string that is one).
RETYPES: tuple[Any, ...] = (None, True, False, 0, 7, -1, 1.5, "", "x", "1", [], [1], {}, {"k": "v"})

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from((0, 1, -1, 65535, 65536, 2**31, 2**32, 2**63, -(2**63) - 1)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TRICKY_STRINGS),
    st.text(max_size=24),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.sampled_from(TRICKY_STRINGS),
                                                                 inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _near_miss(v: Any) -> list[Any]:
    """Values one step outside what ``v`` is: the edge cases of its type."""
    if isinstance(v, bool):
        return ["true", 1, None]
    if isinstance(v, int):
        return [v + 1, v - 1, -v, str(v), float(v), 0, 2**32 + v, None, True]
    if isinstance(v, str):
        return [v.upper(), v + "x", v[:-1], v + "/33", " " + v, v * 20, 1, None, [v], {v: v}]
    if isinstance(v, list):
        return [v * 3, [], [None], v[:1] * 50, {}, "list"]
    if isinstance(v, dict):
        return [[v], {}, None, "map", {**v, "": 1}]
    return [None, 0, "", [], {}]


@st.composite
def mutated(draw: st.DrawFn, seed: Any, max_mutations: int = 3) -> Any:
    """``seed`` with 1..max_mutations random mutations; the seed itself is never modified."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            if draw(st.booleans()):
                doc = draw(json_values)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(("replace", "retype", "near_miss", "delete", "add_key", "grow")))
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "retype":  # the commonest parser bug: a value of another JSON type than expected
            parent[key] = copy.deepcopy(draw(st.sampled_from(RETYPES)))
        elif op == "near_miss":
            parent[key] = draw(st.sampled_from(_near_miss(parent[key])))
        elif op == "delete":
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif op == "add_key":
            target = parent[key]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=10) | st.sampled_from(TRICKY_STRINGS))] = draw(json_values)
            else:
                parent[key] = draw(json_values)
        else:  # grow: repeat list items / nest the value
            target = parent[key]
            parent[key] = target * draw(st.integers(2, 5)) if isinstance(target, list) else [target, target]
    return doc


def documents(seeds: list[Any], max_mutations: int = 3) -> st.SearchStrategy[Any]:
    """Mostly mutated seeds (8 in 10); sometimes an unmutated seed (must be accepted) or pure noise."""
    mut = st.sampled_from(seeds).flatmap(lambda s: mutated(s, max_mutations))
    return st.one_of(*([mut] * 8), st.sampled_from(seeds).map(copy.deepcopy), json_values)
