"""Without its server binaries the fault suite skips on a developer's
machine and fails in CI, so that CI cannot be green without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.prerequisites import in_ci, missing_prerequisites, require_prerequisites

ROOT = Path(__file__).resolve().parents[2]


def nothing_found(name: str = "") -> None:
    return None


def test_missing_binaries_are_named():
    missing = missing_prerequisites(find_postgres=nothing_found, which=nothing_found)

    assert len(missing) == 2
    assert "PostgreSQL's server binaries" in missing[0]
    assert "redis-server" in missing[1]


def test_nothing_is_missing_when_both_are_found():
    found = missing_prerequisites(
        find_postgres=lambda: Path("/usr/lib/postgresql/15/bin"), which=lambda name: f"/x/{name}"
    )

    assert found == []


def test_in_ci_a_missing_binary_fails_the_run():
    missing = missing_prerequisites(find_postgres=nothing_found, which=lambda name: "/x")

    with pytest.raises(pytest.fail.Exception, match=r"PostgreSQL's server binaries.*in CI"):
        require_prerequisites(missing, environ={"CI": "true"})


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_outside_ci_a_missing_binary_skips_the_fault_tests(ci):
    environ = {} if ci is None else {"CI": ci}

    with pytest.raises(pytest.skip.Exception, match="redis-server"):
        require_prerequisites(["redis-server (redis-server)"], environ=environ)


@pytest.mark.parametrize("ci", [{"CI": "true"}, {}])
def test_with_everything_installed_nothing_happens(ci):
    assert require_prerequisites([], environ=ci) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("woodpecker", True),
        ("false", False),
        ("", False),
        ("0", False),
    ],
)
def test_what_counts_as_ci(value, expected):
    assert in_ci({"CI": value}) is expected


@pytest.mark.parametrize(
    ("ci", "exit_code", "said"), [("true", 1, "in CI they must run"), ("", 0, "1 skipped")]
)
def test_the_fault_suite_without_redis_server_fails_in_ci_and_skips_elsewhere(ci, exit_code, said):
    # Only the virtualenv on PATH: redis-server is not found, as on a bare machine.
    env = os.environ | {"PATH": str(Path(sys.executable).parent), "CI": ci}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
         "tests/faults/test_redis_down.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    output = completed.stdout + completed.stderr
    assert completed.returncode == exit_code, output
    assert said in output, output
