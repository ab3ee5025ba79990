"""rootless/oci/plainjson.py against json itself: what rl-oci's start, state, kill
and delete read (state.json, possibly damaged) and print (state)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rootless.oci import plainjson

_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_plain)
def test_dumps_is_json_dumps_indent_2(obj: Any) -> None:
    assert plainjson.dumps(obj) == json.dumps(obj, indent=2)


@given(_plain | st.floats(allow_nan=False))
def test_loads_reads_what_json_writes(obj: Any) -> None:
    for text in (json.dumps(obj), json.dumps(obj, indent=2), f" \n{json.dumps(obj)}\t\r\n"):
        assert plainjson.loads(text) == json.loads(text)
        assert plainjson.loads(text.encode()) == json.loads(text)


def test_floats_and_other_values_are_json_s() -> None:
    for obj in ({"a": 1.5, "b": [float("inf")]}, {1: "int key"}, ("a", "tuple")):
        assert plainjson.dumps(obj) == json.dumps(obj, indent=2)
    assert plainjson.loads('[NaN, Infinity, -Infinity, 1e3, -0]')[1:] == [
        float("inf"), float("-inf"), 1000.0, 0]


@pytest.mark.parametrize("text", [
    "", " ", "{", '{"a": 1', '{"a": 1}}', '{"a": 1} x', "nul", "[1,]", '{"a" 1}', "'a'",
    '"\\x"', '"a\x01"', "\ufeff{}", "[" * 100_000, "01", "{}{}"])
def test_damaged_texts_fail_as_json_fails(text: str) -> None:
    try:
        want: Any = json.loads(text)
    except (ValueError, RecursionError) as e:
        with pytest.raises(type(e)):
            plainjson.loads(text)
    else:
        assert plainjson.loads(text) == want


@given(st.text())
def test_any_text_reads_as_json_reads_it(text: str) -> None:
    try:
        want: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            plainjson.loads(text)
    else:
        assert plainjson.loads(text) == want


def test_damaged_text_in_a_process_without_json() -> None:
    """rl-oci's state has no json loaded: a damaged state.json still raises
    json's ValueError there (the C scanner alone cannot make one)."""
    probe = ("import sys\n"
             "from rootless.oci import plainjson\n"
             "assert 'json' not in sys.modules\n"
             "assert plainjson.loads(b' {\"a\": [1, null]} ') == {'a': [1, None]}\n"
             "for text in ('{not json', '', '[1] x', '[' * 100000):\n"
             "    try:\n"
             "        plainjson.loads(text)\n"
             "    except (ValueError, RecursionError) as e:\n"
             "        print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=60, check=False)
    assert (r.returncode, r.stdout.split()) == (0, ["JSONDecodeError"] * 3 + [
        "RecursionError"]), r.stderr
