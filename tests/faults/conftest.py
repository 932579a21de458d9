"""Fixtures of the fault tests: a private PostgreSQL for the session (a fresh
database per test, copied from a migrated template), a private Redis, the
provider stand-in and the app's processes per test. Nothing here uses the
test database of pytest-django or the machine's shared servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.prerequisites import missing_prerequisites, require_prerequisites
from tests.faults.services import (
    FAST_TIMINGS,
    TEMPLATE_DATABASE,
    Database,
    PrivatePostgres,
    PrivateRedis,
    Provider,
    Stack,
    app_environment,
    migrate,
    postgres_bin,
    provider_stand_in,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: injects failures into real processes; slow")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed fault test shows the end of every process's log."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):
        report.sections.append(("logs of the processes", stack.logs()))
    return report


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    require_prerequisites(missing_prerequisites(), environ=os.environ)
    bin_dir = postgres_bin()
    assert bin_dir is not None  # checked just above
    server = PrivatePostgres(bin_dir)
    try:
        server.init()
        server.start()
        server.execute(f"CREATE DATABASE {TEMPLATE_DATABASE}")
        migrate(server.url(TEMPLATE_DATABASE))
        yield server
    finally:
        server.destroy()


@pytest.fixture
def log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="headroom-faults-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def database(postgres: PrivatePostgres) -> Iterator[Database]:
    name = f"faults_{uuid.uuid4().hex[:10]}"
    postgres.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
    try:
        yield Database(postgres.url(name))
    finally:
        # Should the server be down, the session's teardown removes it whole.
        with contextlib.suppress(Exception):
            postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def redis(log_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(log_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider() -> Iterator[Provider]:
    with provider_stand_in() as stand_in:
        yield stand_in


@pytest.fixture
def stack(
    database: Database, redis: PrivateRedis, provider: Provider, log_dir: Path
) -> Iterator[Stack]:
    """The app's processes of one test (started by the test), stopped first at teardown."""
    env = app_environment(
        database_url=database.url,
        redis_url=redis.url(0),
        provider_url=provider.url,
        settings=FAST_TIMINGS,
    )
    running = Stack(env=env, log_dir=log_dir)
    try:
        yield running
    finally:
        running.close()
