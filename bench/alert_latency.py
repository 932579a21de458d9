"""Alert latency: from the ingest call that crosses a threshold to the email
handed to the provider, over real processes: gunicorn, a Celery worker on
Redis, PostgreSQL, and a local stand-in for Postmark. Prints p50/p99.

    python -m bench.alert_latency [--firings 120]

Uses (and recreates) the scratch database `headroom_bench`; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stubs import postmark_stub  # noqa: E402

DATABASE = "headroom_bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')


@contextmanager
def _processes(env: dict[str, str], port: int) -> Iterator[None]:
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-c",
            "2",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        yield
    finally:
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            process.wait(timeout=30)


def _wait_for_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_for_worker(seconds: float = 60) -> None:
    from config.celery import app

    deadline = time.monotonic() + seconds
    while not app.control.ping(timeout=1):
        if time.monotonic() > deadline:
            raise RuntimeError("the Celery worker did not answer")


def _setup(count: int) -> list[tuple[str, str]]:
    """`count` organizations, each with one admin, one alert at 1 credit and a key."""
    import django

    django.setup()
    from decimal import Decimal

    from accounts.services import api_key_create, membership_create, organization_create
    from alerts.services import alert_create

    out = []
    for index in range(count):
        organization = organization_create(slug=f"bench-{index}", name=f"Bench {index}")
        membership_create(organization=organization, email=f"admin{index}@bench.test", role="admin")
        alert_create(organization=organization, threshold_type="absolute", threshold=Decimal(1))
        _, key = api_key_create(organization=organization)
        out.append((key, f"admin{index}@bench.test"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--firings", type=int, default=120)
    args = parser.parse_args()
    _recreate_database()
    port = _free_port()
    with postmark_stub() as provider:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "bench",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
            "REDIS_URL": "redis://127.0.0.1:6379/13",
            "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
            "ANYMAIL_POSTMARK_SERVER_TOKEN": "bench",
            "ANYMAIL_POSTMARK_API_URL": provider.url,
        }
        os.environ.update(env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        organizations = _setup(args.firings)
        with _processes(env, port):
            _wait_for_http(f"http://127.0.0.1:{port}/api/v1/openapi.json")
            _wait_for_worker()
            started: dict[str, float] = {}
            for index, (key, admin_email) in enumerate(organizations):
                body = json.dumps(
                    {"events": [{"idempotency_key": f"e{index}", "credits": 1}]}
                ).encode()
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/usage",
                    data=body,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                )
                started[admin_email] = time.monotonic()
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 202
                time.sleep(0.05)
            emails = provider.wait_for(len(organizations), seconds=120)
    latencies = sorted((email.at - started[email.json()["To"]]) * 1000 for email in emails)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"alert latency over {len(latencies)} firings: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
