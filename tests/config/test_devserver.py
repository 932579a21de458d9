"""`make run` end to end: it serves the login page, prints the demo login,
says which database and task mode it uses, and stops all it started. It is
a real server in every mode: 100 idle keep-alive clients and 40 simultaneous
consumes, with no refused or reset connection, no 5xx and a bounded number
of PostgreSQL connections; with DEBUG off it serves pages and static files.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.models import MAX_ORGANIZATION_ALERTS
from tests.processes import ProcessOutput, free_port, status_once_up

ROOT = Path(__file__).resolve().parents[2]
DEVSERVER_DATABASE = "headroom_devserver_check"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IDLE_CLIENTS = 100
SIMULTANEOUS_CONSUMES = 40
# Bounds on the load's time, so that a server that stalls fails rather than hangs.
REQUEST_TIMEOUT_SECONDS = 15
IDLE_PHASE_SECONDS = 60
# What make run may hold of PostgreSQL's 100 connections (the test suite and
# the operator commands need the rest): web threads plus the Celery worker's.
MAX_DATABASE_CONNECTIONS = 20
# The demo organization's members (seed_demo): priya is over her limit, so
# the burst gets 402s as well as 200s, both being answers.
DEMO_MEMBERS = ("admin@acme.test", "priya@acme.test", "sam@acme.test", "chen@acme.test")


def _read_until(process: subprocess.Popen[str], marker: str, seconds: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} not printed; got:\n" + "\n".join(lines))


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid
            child = int(status.parent.name)
            found |= {child, *_descendants(child)}
    return found


def _run_make(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _base_env(port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DEBUG"}
    }
    env["PORT"] = str(port)
    return env


def _drop_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DEVSERVER_DATABASE}" WITH (FORCE)')


def _fresh_postgres_and_redis() -> dict[str, str]:
    """The environment of `make run` on an empty database of its own."""
    _drop_database()
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{DEVSERVER_DATABASE}"')
    return {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DEVSERVER_DATABASE}",
        "REDIS_URL": "redis://127.0.0.1:6379/14",
    }


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its (dead) parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop_and_check(process: subprocess.Popen[str], port: int) -> None:
    children = _descendants(process.pid)
    assert children, "make run started nothing"
    process.send_signal(signal.SIGTERM)  # to make alone, as a supervisor would
    process.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(pid) for pid in children):
        time.sleep(0.2)
    survivors = [pid for pid in children if _running(pid)]
    assert not survivors, f"still running after SIGTERM: {survivors}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)


def test_make_run_embedded_mode(tmp_path):
    port = free_port()
    process = _run_make(_base_env(port))
    try:
        lines = _read_until(process, "Admin login:", seconds=240)
        assert "SQLite" in lines[0] and "DATABASE_URL is not set" in lines[0]
        assert "in-process" in lines[1] and "REDIS_URL is not set" in lines[1]
        assert any("admin@acme.test" in line for line in lines)
        assert status_once_up(f"http://127.0.0.1:{port}/accounts/login/") == 200
    finally:
        _stop_and_check(process, port)


def test_make_run_with_postgres_and_redis_starts_a_worker():
    port = free_port()
    env = _base_env(port) | _fresh_postgres_and_redis()
    process = _run_make(env)
    try:
        lines = _read_until(process, "ready.", seconds=240)  # Celery's "celery@host ready."
        assert "PostgreSQL" in lines[0] and "Celery worker" in lines[1]
        assert any("admin@acme.test" in line for line in lines)
        assert status_once_up(f"http://127.0.0.1:{port}/accounts/login/") == 200
    finally:
        _stop_and_check(process, port)
        _drop_database()


# A real server: idle keep-alive clients, a burst of consumes, DEBUG off.


def _create_api_key(env: dict[str, str]) -> str:
    """A key of the demo organization, from the operator command (its last line)."""
    completed = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "acme"],
        cwd=ROOT,
        env=env | {"DEBUG": "true"},  # keys are hashed without SECRET_KEY
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.strip().splitlines()[-1]


def _request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: str | None = None,
) -> int | str:
    """The status, or what stood in for one: the error (a reset, a refusal, a
    timeout) or a status whose response closed the connection.
    """
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__
    return f"{response.status}, closed" if response.will_close else response.status


@dataclass
class Load:
    idle_first: Counter[int | str] = field(default_factory=Counter)
    consumes: Counter[int | str] = field(default_factory=Counter)
    alert_creations: Counter[int | str] = field(default_factory=Counter)
    inherited_alerts: int = 0  # from the plan: they count toward the cap
    idle_again: Counter[int | str] = field(default_factory=Counter)
    seconds: float = 0.0


def _at_once(port: int, requests: Sequence[tuple[str, str, Any]], key: str) -> Counter[int | str]:
    """Each request on a connection of its own, all sent at the same instant."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, str, Any]) -> int | str:
        method, path, body = request
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            barrier.wait(timeout=30)
            return _request(connection, method, path, headers=headers, body=json.dumps(body))
        finally:
            connection.close()

    with ThreadPoolExecutor(len(requests)) as pool:
        return Counter(pool.map(send, requests))


def _delete_alerts(port: int, key: str) -> int:
    """The demo organization's own alerts, all deleted: room for the burst's.
    Those it inherits from its plan cannot be (SPEC §12): how many are left.
    """
    headers = {"Authorization": f"Bearer {key}"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/api/v1/alerts?limit=200", headers=headers)
        response = connection.getresponse()
        alerts = json.loads(response.read())["data"]
        for alert in alerts:
            if alert["source"] == "organization":
                path = f"/api/v1/alerts/{alert['id']}"
                assert _request(connection, "DELETE", path, headers=headers) == 204
    finally:
        connection.close()
    return sum(alert["source"] != "organization" for alert in alerts)


def _idle_clients_then_a_burst(port: int, key: str) -> Load:
    """100 API clients make a request each and keep their connection open;
    then 40 more consume at the same instant, each on a connection of its
    own; then 40 create an alert at the same instant (a transaction that
    reads before it writes: on SQLite, where "database is locked" comes
    from); then every idle client asks again on the connection it kept.
    """
    headers = {"Authorization": f"Bearer {key}"}
    load = Load()
    started = time.monotonic()
    idle: list[tuple[http.client.HTTPConnection, socket.socket | None]] = []
    try:
        for _ in range(IDLE_CLIENTS):
            if time.monotonic() - started > IDLE_PHASE_SECONDS:
                load.idle_first["not tried: too slow"] += 1
                continue
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS
            )
            status = _request(connection, "GET", "/api/v1/organization", headers=headers)
            load.idle_first[status] += 1
            idle.append((connection, connection.sock))

        run = uuid.uuid4().hex
        consumes = [
            (
                "POST",
                "/api/v1/consume",
                {
                    "user": DEMO_MEMBERS[index % len(DEMO_MEMBERS)],
                    "credits": "1",
                    "idempotency_key": f"load-{run}-{index}",
                },
            )
            for index in range(SIMULTANEOUS_CONSUMES)
        ]
        load.consumes = _at_once(port, consumes, key)

        load.inherited_alerts = _delete_alerts(port, key)
        creations = [
            (
                "POST",
                "/api/v1/alerts",
                {
                    "threshold_type": "percentage",
                    "threshold": str(50 + index),
                    "notify": "all_admins",
                    "fire_if_already_exceeded": False,
                },
            )
            for index in range(SIMULTANEOUS_CONSUMES)
        ]
        load.alert_creations = _at_once(port, creations, key)
        _delete_alerts(port, key)

        asked_again = time.monotonic()
        for connection, kept in idle:
            if time.monotonic() - asked_again > IDLE_PHASE_SECONDS:
                load.idle_again["not tried: too slow"] += 1
                continue
            status = _request(connection, "GET", "/api/v1/organization", headers=headers)
            # http.client reconnects by itself when its socket was closed: a
            # new socket means the server had dropped the idle client.
            load.idle_again[status if connection.sock is kept else f"{status}, reconnected"] += 1
    finally:
        for connection, _ in idle:
            connection.close()
    load.seconds = time.monotonic() - started
    print(f"{IDLE_CLIENTS} idle clients, then twice {SIMULTANEOUS_CONSUMES} at once: {load}")
    return load


def _assert_held(load: Load, output: ProcessOutput) -> None:
    logs = f"\nmake run's output ends with:\n{output.tail()}"
    assert load.idle_first == Counter({200: IDLE_CLIENTS}), f"{load.idle_first}{logs}"
    assert set(load.consumes) <= {200, 402}, f"{load.consumes}{logs}"
    # The cap on alerts holds under concurrency too: the rest are refused.
    created = MAX_ORGANIZATION_ALERTS - load.inherited_alerts
    refused = SIMULTANEOUS_CONSUMES - created
    assert load.alert_creations == Counter({201: created, 422: refused}), (
        f"{load.alert_creations}{logs}"
    )
    assert load.idle_again == Counter({200: IDLE_CLIENTS}), f"{load.idle_again}{logs}"


class _ConnectionCount:
    """Samples how many PostgreSQL connections a database has, until stopped."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _ConnectionCount:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            while not self._stop.is_set():
                row = admin.execute(query, (self.database,)).fetchone()
                self.samples.append(row[0] if row else 0)
                self._stop.wait(0.05)


def test_make_run_embedded_mode_holds_idle_clients_and_a_burst() -> None:
    port = free_port()
    env = _base_env(port)
    process = _run_make(env)
    try:
        _read_until(process, "Headroom is at", seconds=240)
        output = ProcessOutput(process)
        assert status_once_up(f"http://127.0.0.1:{port}/accounts/login/") == 200

        load = _idle_clients_then_a_burst(port, _create_api_key(env))

        _assert_held(load, output)
    finally:
        _stop_and_check(process, port)


def test_make_run_with_postgres_holds_idle_clients_and_a_burst_on_few_connections() -> None:
    port = free_port()
    env = _base_env(port) | _fresh_postgres_and_redis()
    process = _run_make(env)
    try:
        _read_until(process, "ready.", seconds=240)  # the Celery worker's
        output = ProcessOutput(process)
        assert status_once_up(f"http://127.0.0.1:{port}/accounts/login/") == 200
        key = _create_api_key(env)

        with _ConnectionCount(DEVSERVER_DATABASE) as connections:
            load = _idle_clients_then_a_burst(port, key)

        _assert_held(load, output)
        print(f"PostgreSQL connections of make run: at most {max(connections.samples)}")
        assert connections.samples, "pg_stat_activity was never read"
        assert max(connections.samples) <= MAX_DATABASE_CONNECTIONS, output.tail()
    finally:
        _stop_and_check(process, port)
        _drop_database()


def test_make_run_with_debug_off_serves_pages_and_static_files_without_a_secret_key() -> None:
    port = free_port()
    env = _base_env(port) | {"DEBUG": "0"}  # and no SECRET_KEY, ALLOWED_HOSTS or SITE_URL
    process = _run_make(env)
    try:
        _read_until(process, "Headroom is at", seconds=240)
        output = ProcessOutput(process)
        base = f"http://127.0.0.1:{port}"
        assert status_once_up(f"{base}/accounts/login/") == 200, output.tail()
        with urllib.request.urlopen(f"{base}/accounts/login/", timeout=10) as response:
            page = response.read().decode()
        # The page names its stylesheet by the hashed name of the manifest.
        hashed = re.search(r'href="(/static/css/app\.[0-9a-f]{12}\.css)"', page)
        assert hashed, page[:2000]
        for path in ("/static/css/app.css", hashed.group(1)):
            with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
                assert response.status == 200
                assert b"{" in response.read()
        localhost = urllib.request.Request(
            f"http://localhost:{port}/accounts/login/", headers={"Host": f"localhost:{port}"}
        )
        with urllib.request.urlopen(localhost, timeout=10) as response:
            assert response.status == 200

        load = _idle_clients_then_a_burst(port, _create_api_key(env))

        _assert_held(load, output)
    finally:
        _stop_and_check(process, port)
