"""The CNI client's json-free codec agrees with the json module."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novanet_core.cni import minijson

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(values)
def test_roundtrip_matches_json(v):
    assert minijson.loads(minijson.dumps(v)) == json.loads(json.dumps(v))
    assert minijson.loads(json.dumps(v, indent=2)) == v


@pytest.mark.parametrize("bad", ["", "{not json", "[1,", "{} x", "nul", '{"a" 1}'])
def test_bad_input_is_a_value_error(bad):
    with pytest.raises(ValueError):
        minijson.loads(bad)
    with pytest.raises(ValueError):
        json.loads(bad)
