"""The processes of a benchmark, as in production: PostgreSQL (a scratch
database), Redis (database 11), gunicorn serving `config.wsgi` and a Celery
worker, started with the Procfile's command lines, on 127.0.0.1 only.

Every wait here is bounded; every process started here is stopped on exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faults.services import Process, free_port, start_process  # noqa: E402

DATABASE = "headroom_bench"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Redis database 11 is the benchmark's own: test runs use 12-15.
REDIS_URL = "redis://127.0.0.1:6379/11"
# Two cores: 4 sync workers keep both cores busy while some of them wait on
# PostgreSQL, which shares the cores (gunicorn's rule of thumb, 2 x cores + 1,
# leaves too little CPU to PostgreSQL here). Sync workers, as the Procfile's
# `web` had before config/gunicorn.py (gthread), so that figures compare with
# earlier runs; WEB_CONCURRENCY and WORKER_CONCURRENCY override.
WEB_CONCURRENCY = int(os.environ.get("WEB_CONCURRENCY", "4"))
WORKER_CONCURRENCY = int(os.environ.get("WORKER_CONCURRENCY", "2"))


def log(message: str) -> None:
    print(message, flush=True)


def check_services() -> None:
    """PostgreSQL and Redis must answer on 127.0.0.1, else say how to start them."""
    import psycopg
    import redis

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        raise SystemExit(
            f"PostgreSQL does not answer on 127.0.0.1:5432 as postgres ({error}). "
            "Start it (e.g. `pg_ctlcluster 15 main start`) and run `make bench` again."
        ) from None
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except redis.RedisError as error:
        raise SystemExit(
            f"Redis does not answer on 127.0.0.1:6379 ({error}). "
            "Start it (e.g. `redis-server --daemonize yes --bind 127.0.0.1`) and try again."
        ) from None


def recreate_database(name: str = DATABASE) -> None:
    import psycopg

    assert name.startswith("headroom_bench"), "the benchmark only touches its own databases"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def database_url(name: str = DATABASE) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def environment(*, provider_url: str, database: str = DATABASE) -> dict[str, str]:
    """The production settings, pointed at the scratch database, Redis db 11
    and the stand-in email provider.
    """
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "",  # a developer's .env (written by make run) never applies
        "SECRET_KEY": "bench-only-secret-key",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        "DATABASE_URL": database_url(database),
        "REDIS_URL": REDIS_URL,
        "SITE_URL": "http://127.0.0.1:8000",
        "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
        "ANYMAIL_POSTMARK_SERVER_TOKEN": "bench",
        "ANYMAIL_POSTMARK_API_URL": provider_url,
        # The per-key limiter still counts every request in Redis, as in
        # production, but never refuses one: throughput is what is measured.
        "API_RATE_LIMIT": "1000000/m",
        "PYTHONUNBUFFERED": "1",
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


def django_setup(env: dict[str, str]) -> None:
    """Configure Django in this process with the benchmark's environment."""
    import warnings

    import django

    os.environ.update(env)
    # WhiteNoise looks for collected static files, which the benchmark never serves.
    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()


@dataclass
class Servers:
    url: str
    web: Process  # the gunicorn master; its children are the workers
    worker: Process | None
    log_dir: Path


@contextmanager
def servers(
    env: dict[str, str], *, web_workers: int = WEB_CONCURRENCY, with_worker: bool = True
) -> Iterator[Servers]:
    """gunicorn and a Celery worker, as the Procfile's `web` and `worker`
    lines start them (bound to 127.0.0.1), with their logs in a temporary
    folder, kept only when something failed. Beat is not started: no
    measurement depends on its sweep. Each leads a process group of its own,
    stopped as a whole on exit, even when starting the next one failed.
    """
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="headroom-bench-"))
    started: list[Process] = []
    failed = True
    try:
        web = start_process(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(web_workers),
                "--access-logfile",
                "-",
            ],
            env=env,
            log_dir=log_dir,
        )
        started.append(web)
        worker = None
        if with_worker:
            worker = start_process(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(WORKER_CONCURRENCY),
                ],
                env=env,
                log_dir=log_dir,
            )
            started.append(worker)
        running = Servers(
            url=f"http://127.0.0.1:{port}",
            web=web,
            worker=worker,
            log_dir=log_dir,
        )
        wait_for_http(f"{running.url}/api/v1/openapi.json", process=web)
        if worker is not None:
            wait_for_worker()
        yield running
        failed = False
    finally:
        for process in started:
            process.stop(seconds=20)
        if failed:
            log(f"   the servers' logs are in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


def wait_for_http(url: str, *, process: Process, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if not process.alive():
            raise RuntimeError(f"gunicorn exited with {process.popen.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def drain(url: str, *, seconds: float = 60) -> float:
    """Wait until gunicorn has worked through what a run left queued (an
    overloaded open loop leaves connections in the listen queue): until two
    cheap requests in a row are answered at once. Returns the seconds waited.
    """
    started = time.monotonic()
    quick = 0
    while quick < 2 and time.monotonic() - started < seconds:
        sent = time.monotonic()
        try:
            urllib.request.urlopen(f"{url}/api/v1/organization", timeout=seconds).close()
        except urllib.error.HTTPError:
            pass  # 401 without a key: answered, which is all we ask
        except OSError:
            time.sleep(0.5)
        quick = quick + 1 if time.monotonic() - sent < 0.2 else 0
    return time.monotonic() - started


def cpu_busy(seconds: float = 1.0) -> float:
    """The share of the machine's CPU time that was busy over `seconds`."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return idle, sum(fields)

    idle_before, total_before = sample()
    time.sleep(seconds)
    idle_after, total_after = sample()
    total = total_after - total_before
    return 1 - (idle_after - idle_before) / total if total else 0.0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _postgres_backends(database: str) -> list[int]:
    """The PostgreSQL server processes serving `database` (by their title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            pids.append(int(entry.name))
    return pids


@dataclass
class CpuUse:
    web: float = 0.0  # seconds of CPU in the gunicorn workers
    database: float = 0.0  # seconds of CPU in PostgreSQL's backends for the scratch database


class CpuMeter:
    """CPU time that the gunicorn workers and PostgreSQL spend on a run: unlike
    wall time, not inflated by whatever else the machine is doing.
    """

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.before: dict[int, float] = {}
        self.used = CpuUse()

    def _snapshot(self) -> tuple[dict[int, float], set[int]]:
        web = set(self.servers.web.children())  # the gunicorn workers
        pids = web | set(_postgres_backends(DATABASE))
        return {pid: _cpu_seconds(pid) for pid in pids}, web

    def __enter__(self) -> CpuUse:
        self.before, _ = self._snapshot()
        return self.used

    def __exit__(self, *exc: object) -> None:
        after, web = self._snapshot()
        for pid, seconds in after.items():
            spent = seconds - self.before.get(pid, 0.0)
            if pid in web:
                self.used.web += spent
            else:
                self.used.database += spent


# All the waits for a quiet machine, together, stay within this (seconds), so
# that a machine busy with other work for good still gets its run done.
QUIET_WAIT_BUDGET = [120.0]


def wait_for_quiet(*, busy_below: float = 0.25, seconds: float = 15) -> float:
    """Wait (at most `seconds`, and within what remains of QUIET_WAIT_BUDGET)
    until other processes leave the CPU mostly idle, so that they are not
    measured along. Returns the last busy share.
    """
    started = time.monotonic()
    deadline = started + min(seconds, QUIET_WAIT_BUDGET[0])
    busy = cpu_busy()
    while busy >= busy_below and time.monotonic() < deadline:
        log(f"   waiting for a quieter machine: CPU {busy:.0%} busy with other work")
        time.sleep(4)
        busy = cpu_busy()
    QUIET_WAIT_BUDGET[0] = max(0.0, QUIET_WAIT_BUDGET[0] - (time.monotonic() - started))
    return busy


def wait_for_worker(seconds: float = 60) -> None:
    from config.celery import app

    deadline = time.monotonic() + seconds
    while not app.control.ping(timeout=1):
        if time.monotonic() > deadline:
            raise RuntimeError("the Celery worker did not answer")
