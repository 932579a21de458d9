"""What the fault tests need from the machine, and what happens without it.

On a developer's machine a missing server binary skips the fault tests, with
the reason. In CI (`CI` set, as CI services and `.ci/run` set it) it fails
the run: a green CI without the fault tests would prove nothing about them.
`.ci/run` installs both beforehand.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.faults.services import postgres_bin

NOT_CI = frozenset({"", "0", "false", "no", "off"})


def missing_prerequisites(
    *,
    find_postgres: Callable[[], Path | None] = postgres_bin,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """What the fault tests need and this machine lacks (Debian package names)."""
    missing = []
    if find_postgres() is None:
        missing.append("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin; postgresql)")
    if which("redis-server") is None:
        missing.append("redis-server (redis-server)")
    return missing


def in_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("CI", "").strip().lower() not in NOT_CI


def require_prerequisites(missing: list[str], *, environ: Mapping[str, str]) -> None:
    """Nothing if nothing is missing; else fail in CI, skip elsewhere."""
    if not missing:
        return
    reason = "the fault tests need " + " and ".join(missing) + " installed"
    if in_ci(environ):
        pytest.fail(f"{reason}; in CI they must run (.ci/run installs them)", pytrace=False)
    pytest.skip(reason)
