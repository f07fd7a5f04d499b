"""The whole process, every real part on loopback (see ``world.py``)."""

import pytest

# Helpers that assert: show the compared values when they fail, as in the test modules.
pytest.register_assert_rewrite("tests.e2e.envrepo", "tests.e2e.outcomes", "tests.e2e.world")
