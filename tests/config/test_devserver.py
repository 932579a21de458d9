"""`make run` end to end: it serves the login page, prints the demo login,
says which database and task mode it uses, and stops all it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVSERVER_DATABASE = "headroom_devserver_check"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _get(url: str, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


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
    port = _free_port()
    process = _run_make(_base_env(port))
    try:
        lines = _read_until(process, "Admin login:", seconds=240)
        assert "SQLite" in lines[0] and "DATABASE_URL is not set" in lines[0]
        assert "in-process" in lines[1] and "REDIS_URL is not set" in lines[1]
        assert any("admin@acme.test" in line for line in lines)
        assert _get(f"http://127.0.0.1:{port}/accounts/login/") == 200
    finally:
        _stop_and_check(process, port)


def test_make_run_with_postgres_and_redis_starts_a_worker():
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DEVSERVER_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DEVSERVER_DATABASE}"')
    port = _free_port()
    env = _base_env(port) | {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DEVSERVER_DATABASE}",
        "REDIS_URL": "redis://127.0.0.1:6379/14",
    }
    process = _run_make(env)
    try:
        lines = _read_until(process, "ready.", seconds=240)  # Celery's "celery@host ready."
        assert "PostgreSQL" in lines[0] and "Celery worker" in lines[1]
        assert any("admin@acme.test" in line for line in lines)
        assert _get(f"http://127.0.0.1:{port}/accounts/login/") == 200
    finally:
        _stop_and_check(process, port)
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DEVSERVER_DATABASE}" WITH (FORCE)')
