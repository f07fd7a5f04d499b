"""Fixtures for every test world, registered once (see ``tests/fixtures``)."""

pytest_plugins = [
    "tests.fixtures.git",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.operators",
]
