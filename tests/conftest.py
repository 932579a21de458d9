"""Test configuration: real PostgreSQL and Redis (see config/test_settings.py)."""

from __future__ import annotations

import pytest

# Their asserts report like the tests' own (pytest rewrites test modules only).
pytest.register_assert_rewrite("tests.fixtures", "tests.helpers")

from tests.fixtures import *  # noqa: E402, F403
