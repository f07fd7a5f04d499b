"""What the webhook server reads of a body, decided from the headers alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.server.connections import body_length

CAP = 5 * 1024 * 1024


def test_a_plain_length_within_the_cap_is_read() -> None:
    assert body_length(["0"], transfer_encoding=False, cap=CAP) == 0
    assert body_length(["1234"], transfer_encoding=False, cap=CAP) == 1234
    assert body_length([str(CAP)], transfer_encoding=False, cap=CAP) == CAP
    assert body_length(["12", "12"], transfer_encoding=False, cap=CAP) == 12


def test_negative_signed_or_non_numeric_lengths_are_400() -> None:
    for value in ("-1", "+5", "abc", "1.5", "0x10", "1,2", "1 2", "", "٣", "²"):
        refusal = body_length([value], transfer_encoding=False, cap=CAP)
        assert isinstance(refusal, tuple), value
        assert refusal[0] == 400, value


def test_conflicting_lengths_are_400() -> None:
    assert body_length(["1", "2"], transfer_encoding=False, cap=CAP) == (
        400,
        "conflicting Content-Length headers",
    )


def test_a_missing_length_or_a_transfer_coding_is_411() -> None:
    assert body_length([], transfer_encoding=False, cap=CAP)[0] == 411  # type: ignore[index]
    refusal = body_length(["10"], transfer_encoding=True, cap=CAP)
    assert isinstance(refusal, tuple)
    assert refusal[0] == 411


def test_over_the_cap_is_413_even_with_thousands_of_digits() -> None:
    assert body_length([str(CAP + 1)], transfer_encoding=False, cap=CAP)[0] == 413  # type: ignore[index]
    assert body_length(["9" * 5000], transfer_encoding=False, cap=CAP)[0] == 413  # type: ignore[index]
    # Leading zeros do not make a small length large.
    assert body_length(["0" * 50 + "7"], transfer_encoding=False, cap=CAP) == 7


@given(
    st.lists(st.one_of(st.text(max_size=30), st.integers(-(10**30), 10**30).map(str)), max_size=3),
    st.booleans(),
    st.integers(0, 10**9),
)
def test_every_header_value_gives_a_length_within_the_cap_or_a_refusal(
    values: list[str], transfer_encoding: bool, cap: int
) -> None:
    decided = body_length(values, transfer_encoding=transfer_encoding, cap=cap)
    if isinstance(decided, int):
        assert 0 <= decided <= cap
        assert not transfer_encoding
        assert all(int(v) == decided for v in values)
    else:
        status, message = decided
        assert status in {400, 411, 413}
        assert message
