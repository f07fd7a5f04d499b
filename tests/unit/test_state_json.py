"""State documents are written exactly as ``json.dumps(indent=2, sort_keys=True)`` would.

The renderer is ours for speed; the bytes on the state branch must not depend on that, so
``git diff`` of a document and any tool that reads it see the standard format.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine.state import _pretty

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), values, max_size=6))
def test_pretty_is_json_dumps_byte_for_byte(data: dict[str, Any]) -> None:
    assert _pretty(data) == json.dumps(data, indent=2, sort_keys=True)


@given(st.dictionaries(st.integers() | st.text(), values, min_size=1, max_size=4))
def test_data_it_was_not_written_for_is_left_to_json(data: dict[Any, Any]) -> None:
    # Integer keys become strings; keys of mixed types cannot be sorted, by either.
    try:
        expected = json.dumps(data, indent=2, sort_keys=True)
    except TypeError:
        with pytest.raises(TypeError):
            _pretty(data)
        return
    assert _pretty(data) == expected
