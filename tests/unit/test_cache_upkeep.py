"""Which packs a merge rewrites: the small recent ones, so that the sizes stay geometric.

``geometric_split`` is pure: given the packs' sizes, smallest first, it says how many of
the smallest to merge. After the merge every pack kept is at least twice all the smaller
ones together, so a merge rewrites about as much as was written since the last one (its
cost does not grow with the cache), and the pack count stays logarithmic in its size.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.gitstore.staging import geometric_split

sizes_ascending = st.lists(st.integers(min_value=1, max_value=10**9), min_size=2, max_size=64).map(
    sorted
)


@given(sizes_ascending)
def test_after_a_merge_every_pack_kept_is_twice_all_the_smaller_ones(sizes: list[int]) -> None:
    k = geometric_split(sizes)
    assert 2 <= k <= len(sizes)
    below = sum(sizes[:k])  # the merged pack (at most this big: objects are shared)
    for size in sizes[k:]:
        assert size >= 2 * below
        below += size


@given(sizes_ascending)
def test_a_merge_takes_no_more_packs_than_it_must(sizes: list[int]) -> None:
    k = geometric_split(sizes)
    if k > 2:  # the largest pack merged would have broken the progression if kept
        assert sizes[k - 1] < 2 * sum(sizes[: k - 1])


def test_a_large_old_pack_is_left_alone_while_small_new_ones_are_merged() -> None:
    assert geometric_split([10, 11, 12, 13, 1_000_000]) == 4
    assert geometric_split([1, 1, 4, 16, 64]) == 2
