"""Test configuration: real PostgreSQL and Redis (see config/test_settings.py)."""

from __future__ import annotations

from tests.fixtures import *  # noqa: F403
