"""Fuzzing the experiment and Metric loaders with mutants of the valid corpus.

Whatever the bytes, loading and validating answers with problems, never an exception,
within a bounded time and memory per input. A fixed seed keeps CI reproducible;
``hack/fuzz.py --examples N`` runs a longer campaign from the same generator.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzzdocs import files, load_everything

MAX_SECONDS = 3.0
"""Per input, with tracemalloc on (it slows allocation-heavy code about threefold)."""
MAX_BYTES = 64 * 1024 * 1024
"""Per input: a 1.7 KB alias bomb once reached 2.1 GB through an error message."""


@pytest.fixture(scope="module", autouse=True)
def _traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


@settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(files())
def test_any_mutant_of_the_corpus_loads_to_problems_in_bounded_time_and_memory(
    file: tuple[str, bytes],
) -> None:
    name, data = file
    outcome = load_everything(name, data)
    assert outcome.error is None, repr(outcome.error)
    assert outcome.seconds < MAX_SECONDS
    assert outcome.peak_bytes < MAX_BYTES
