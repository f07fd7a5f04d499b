"""Fixtures for every test world, registered once (see ``tests/fixtures``).

``make test`` runs the suite on two pytest-xdist workers: most end-to-end tests wait on
servers rather than compute. Tests marked ``long`` are handed out first, so that the rest
of the suite runs beside them rather than after them; tests that share an expensive
session server (``xdist_group``) stay on one worker, so it starts once.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

# Speed is measured by the benchmarks under hack/, never by a test: a property test that
# runs slowly beside a compiling Go build or two busy xdist workers has not failed.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

pytest_plugins = [
    "tests.fixtures.git",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.operators",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``long`` tests first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
