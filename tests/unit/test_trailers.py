from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.gitstore.trailers import (
    decode_mapping,
    encode_mapping,
    format_message,
    parse_trailers,
)

keys = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,20}", fullmatch=True)
# Single-line, non-empty, no surrounding blanks: what survives git's trimming.
values = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40
).filter(lambda v: v == v.strip() and v.strip() != "")
subjects = values
bodies = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r"), max_size=80)
trailer_lists = st.lists(st.tuples(keys, values), min_size=1, max_size=8)
mapping_parts = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)


def test_message_reads_well_and_ends_in_a_trailer_paragraph() -> None:
    message = format_message(
        "productpage: iteration 7/10, candidate at 30%, objectives met",
        [
            ("Rollout-Experiment", "bookinfo/quickstart-exp"),
            ("Rollout-Weights", "productpage-v1=70,productpage-v2=30"),
        ],
        body="Mean latency 12 ms, error rate 0.1 %.",
    )
    assert message == (
        "productpage: iteration 7/10, candidate at 30%, objectives met\n"
        "\n"
        "Mean latency 12 ms, error rate 0.1 %.\n"
        "\n"
        "Rollout-Experiment: bookinfo/quickstart-exp\n"
        "Rollout-Weights: productpage-v1=70,productpage-v2=30\n"
    )


def test_message_without_body_or_trailers() -> None:
    assert format_message("subject", [("A", "1")]) == "subject\n\nA: 1\n"
    assert format_message("subject", []) == "subject\n"


@given(subjects, bodies, trailer_lists)
def test_trailers_round_trip_through_the_message(
    subject: str, body: str, trailers: list[tuple[str, str]]
) -> None:
    assert parse_trailers(format_message(subject, trailers, body)) == tuple(trailers)


@given(subjects, trailer_lists)
def test_the_subject_is_the_first_line(subject: str, trailers: list[tuple[str, str]]) -> None:
    assert format_message(subject, trailers).split("\n", 1)[0] == subject


@pytest.mark.parametrize("key", ["", "-Lead", "Has Space", "Colon:", "Unicode-é", "Under_score"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid trailer key"):
        format_message("s", [(key, "v")])


@given(keys, st.text(max_size=10), st.sampled_from(["\n", "\r", "\r\n"]), st.text(max_size=10))
def test_multi_line_values_are_refused(key: str, head: str, brk: str, tail: str) -> None:
    with pytest.raises(ValueError, match=key):
        format_message("s", [(key, f"{head}{brk}{tail}")])


@pytest.mark.parametrize("value", ["", " ", " padded", "padded\t"])
def test_empty_or_padded_values_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="non-empty without surrounding blanks"):
        format_message("s", [("K", value)])


@pytest.mark.parametrize("subject", ["", "  ", "two\nlines"])
def test_bad_subjects_are_refused(subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        format_message(subject, [])


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("subject only\n", ()),
        ("Key: looks like a trailer but is the subject\n", ()),
        ("subject\n\nKey: value\n", (("Key", "value"),)),
        ("subject\n\nKey:   spaced value  \n\n\n", (("Key", "spaced value"),)),
        ("subject\n\nKey: value\nnot a trailer\n", ()),
        ("subject\n\nA: 1\n\nbody after\n", ()),
        ("subject\n\nbody\n\nA: 1\nB: x=1,y=2\n", (("A", "1"), ("B", "x=1,y=2"))),
        ("subject\n\nA: 1\nA: 2\n", (("A", "1"), ("A", "2"))),
    ],
)
def test_only_a_last_paragraph_made_of_trailers_counts(
    message: str, expected: tuple[tuple[str, str], ...]
) -> None:
    assert parse_trailers(message) == expected


def test_mapping_keeps_the_given_order() -> None:
    encoded = encode_mapping({"productpage-v2": 30, "productpage-v1": 70})
    assert encoded == "productpage-v2=30,productpage-v1=70"
    assert list(decode_mapping(encoded)) == ["productpage-v2", "productpage-v1"]


@given(st.dictionaries(mapping_parts, st.one_of(st.integers(0, 100), mapping_parts), max_size=6))
def test_mapping_round_trip(mapping: dict[str, int | str]) -> None:
    assert decode_mapping(encode_mapping(mapping)) == {k: str(v) for k, v in mapping.items()}


@pytest.mark.parametrize(
    "mapping",
    [{"": 1}, {"a,b": 1}, {"a": "x=y"}, {"a b": 1}, {"a": ""}, {"a": "1,2"}],
)
def test_mapping_parts_that_would_not_read_back_are_refused(mapping: dict[str, int | str]) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_mapping(mapping)


@pytest.mark.parametrize("text", ["a", "a=1,", "=1", "a=1,a=2", "a=1,b"])
def test_malformed_mappings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"malformed|repeats"):
        decode_mapping(text)


def test_empty_mapping_is_an_empty_string() -> None:
    assert encode_mapping({}) == ""
    assert decode_mapping("") == {}
    assert decode_mapping(" a = 1 , b=2 ") == {"a": "1", "b": "2"}
