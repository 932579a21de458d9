"""Private services and real app processes for the fault tests.

Faults are only ever injected into what these helpers start: a redis-server
on a free loopback port per test, a PostgreSQL cluster of the suite's own
(initdb in a temporary folder; run as the `postgres` OS user when we are
root, since PostgreSQL refuses root), and gunicorn, Celery worker and beat as
subprocesses pointed at them, sending to a stand-in for Postmark that can
fail, stall or be hung up on. The machine's shared PostgreSQL and Redis are
never touched. Every wait is bounded; every process and folder is removed on
exit, failures included.

Run as a module it is the entry point of the Celery processes, so that they
can take the tests' timings (`HEADROOM_FAULTS_SETTINGS`, a JSON object of
Django settings applied before the Celery app reads them), and it seeds a
tenant through the services:

    python -m tests.faults.services celery worker --concurrency 2
    python -m tests.faults.services seed < spec.json
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.processes import free_port
from tests.stubs import (
    QuietHandler,
    Received,
    StubServer,
    postmark_sent,
    postmark_unavailable,
    serve,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SETTINGS_ENV = "HEADROOM_FAULTS_SETTINGS"
TEMPLATE_DATABASE = "faults_template"
NOTIFICATION_HEADER = "x-headroom-notification"

# Production timings divided by 100 (retries 10 s -> 0.1 s) or cut to what a
# test can wait for (claim lease 5 min, sweep every 60 s, stale after 30 s).
FAST_TIMINGS: dict[str, Any] = {
    "NOTIFICATION_RETRY_BASE_SECONDS": 0.1,
    "NOTIFICATION_CLAIM_LEASE_SECONDS": 5,
    "NOTIFICATION_STALE_AFTER_SECONDS": 1,
    "CELERY_BEAT_SCHEDULE": {
        "requeue-stale-notifications": {
            "task": "alerts.tasks.requeue_stale_notifications",
            "schedule": 1.0,
        }
    },
}


# --- processes ---------------------------------------------------------------


@dataclass
class Process:
    """A subprocess leading a process group of its own, its output in a log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, seconds: float = 15) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL the group after `seconds`."""
        if not self.killed and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=seconds)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process and every process it started (its group), once:
        later, its number could belong to someone else's process.
        """
        if self.killed:
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def start_process(name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> Process:
    log = log_dir / f"{name}.log"
    with log.open("ab") as output:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name=name, popen=popen, log=log)


# --- Redis ---------------------------------------------------------------------


class PrivateRedis:
    """redis-server on a loopback port of its own, without persistence: once
    stopped it has lost whatever it held (queued and unacknowledged tasks),
    as a crashed broker would. `start` again reuses the same port.
    """

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.process: Process | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.starts += 1
        self.process = start_process(
            f"redis-{self.starts}",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.log_dir),
            ],
            env=dict(os.environ),
            log_dir=self.log_dir,
        )
        wait_until(self.ping, seconds=10, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(seconds=5)
            self.process = None


# --- PostgreSQL ----------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster of the suite's own on a free loopback port, trust
    auth, fsync off (a stop, even `immediate`, is a crash of the server
    processes, not of the machine: what was committed is in the WAL).
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="headroom-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        # pg_ctl's output goes to a file: a pipe would be inherited by the
        # server it starts and never reach end of file.
        with (self.dir / "pg_ctl.out").open("ab") as output:
            completed = subprocess.run(
                [*self.as_owner, str(self.bin / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if completed.returncode:
            raise RuntimeError(f"{program} {' '.join(args)} failed:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.dir / "pg_ctl.out", self.log):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self, *, mode: str, down_for: float) -> None:
        """Stop (`fast`: clients cut off, open transactions rolled back;
        `immediate`: the server processes killed, crash recovery on start),
        stay down `down_for` seconds, start again on the same port.
        """
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql)

    def destroy(self) -> None:
        """Stop the server whatever its state, and remove its folder."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        if pid_file.exists():  # pg_ctl could not stop it: kill it, if it is ours
            with contextlib.suppress(ValueError, OSError, IndexError):
                pid = int(pid_file.read_text().split()[0])
                if str(self.data) in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the email provider ------------------------------------------------------------


@dataclass(repr=False)
class Provider(StubServer):
    """The Postmark stand-in of tests/stubs.py, with more ways to fail:

    - until `down_until` (time.monotonic()) every request fails: answered
      `failure_status`, or with `drop` the connection is closed unanswered;
    - `hold_next` requests are held `hold_seconds` before anything is decided;
      one whose sender hung up meanwhile is `abandoned`: never accepted;
    - `before_answer(received)` runs once, after a request was accepted and
      before its answer goes out (kill the sender there, and it never learns
      that the provider took the message).

    It also answers Postmark's outbound message search by metadata
    (`GET /messages/outbound?count=..&offset=..&metadata_<key>=<value>`).
    """

    down_until: float = 0.0
    drop: bool = False
    hold_next: int = 0
    hold_seconds: float = 0.0
    before_answer: Callable[[Received], None] | None = None
    arrivals: int = 0
    searches: int = 0
    messages: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Provider({self.url}, {dict(self.outcomes())})"

    def outcomes(self) -> Counter[str]:
        with self.lock:
            return Counter(r.headers["x-stub-outcome"] for r in self.received)

    def accepted_per_notification(self) -> Counter[str]:
        """How many times the provider took each notification (by uid, hex)."""
        return Counter(notification_uid(r) for r in self.accepted())

    def requests_per_notification(self) -> Counter[str]:
        with self.lock:
            return Counter(notification_uid(r) for r in self.received)

    def set_down(self, seconds: float, *, drop: bool = False) -> None:
        with self.lock:
            self.drop = drop
            self.down_until = time.monotonic() + seconds


def notification_uid(received: Received) -> str:
    """The notification an email is (its X-Headroom-Notification header), as hex."""
    headers = {h["Name"].lower(): h["Value"] for h in received.json().get("Headers", [])}
    return uuid.UUID(headers[NOTIFICATION_HEADER]).hex


def _client_gone(connection: socket.socket) -> bool:
    """Whether the peer closed its end (a killed process's sockets are closed)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _provider_handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path.rstrip("/") != "/messages/outbound":
                self.answer_json(404, {"ErrorCode": 404, "Message": "not here"})
                return
            wanted = {
                key.removeprefix("metadata_"): values[0]
                for key, values in parse_qs(url.query).items()
                if key.startswith("metadata_")
            }
            with provider.lock:
                provider.searches += 1
                failing = time.monotonic() < provider.down_until
                found = [
                    {"MessageID": message_id, "Recipients": message.get("To", "").split(",")}
                    | {"Metadata": message.get("Metadata") or {}, "Status": "Sent"}
                    for message, message_id in provider.messages
                    if all((message.get("Metadata") or {}).get(k) == v for k, v in wanted.items())
                ]
            if failing:
                self.answer_json(*postmark_unavailable(provider.failure_status))
                return
            self.answer_json(200, {"TotalCount": len(found), "Messages": found})

        def do_POST(self) -> None:
            body = self.read_body()
            headers = self.lowered_headers()
            with provider.lock:
                provider.arrivals += 1
                held = provider.hold_next > 0
                if held:
                    provider.hold_next -= 1
            if held:
                time.sleep(provider.hold_seconds)
                if _client_gone(self.connection):
                    provider.record(self.path, headers, body, "abandoned")
                    self.close_connection = True
                    return
            with provider.lock:
                failing = provider.fail_next > 0 or time.monotonic() < provider.down_until
                provider.fail_next = max(0, provider.fail_next - 1)
                drop = failing and provider.drop
                hook, provider.before_answer = (
                    (None, provider.before_answer) if failing else (provider.before_answer, None)
                )
            if failing:
                headers["x-stub-failure"] = "dropped" if drop else str(provider.failure_status)
            received = provider.record(
                self.path, headers, body, "failed" if failing else "accepted"
            )
            if drop:
                self.close_connection = True  # no answer at all: a connection reset
                return
            if failing:
                self.answer_json(*postmark_unavailable(provider.failure_status))
                return
            message_id = str(uuid.uuid4())
            with provider.lock:
                provider.messages.append((json.loads(body), message_id))
            if hook is not None:
                hook(received)
            self.answer_json(*postmark_sent(body, message_id))

    return Handler


@contextlib.contextmanager
def provider_stand_in() -> Iterator[Provider]:
    provider = Provider(url="")
    with serve(provider, _provider_handler(provider)):
        yield provider


# --- the application's processes ----------------------------------------------------

_NOT_INHERITED = (
    "ANYMAIL_",
    "CELERY_",
    "DJANGO_",
    "DATABASE_URL",
    "REDIS_URL",
    "EMAIL_BACKEND",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "SITE_URL",
    "WEBHOOKS_ALLOW_PRIVATE_URLS",
)


def app_environment(
    *, database_url: str, redis_url: str, provider_url: str, settings: dict[str, Any] | None = None
) -> dict[str, str]:
    """The production settings (config.settings), pointed at the private
    services and the stand-in provider.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "faults-only-secret-key",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SITE_URL": "http://127.0.0.1:8000",
        "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
        "ANYMAIL_POSTMARK_SERVER_TOKEN": "faults",
        "ANYMAIL_POSTMARK_API_URL": provider_url,
        "WEBHOOKS_ALLOW_PRIVATE_URLS": "true",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
        SETTINGS_ENV: json.dumps(settings or {}),
    }


class Stack:
    """One test's gunicorn, Celery workers and beat, started as the Procfile
    starts them (the Celery ones through this module, to take `settings`).
    `start_*` returns at once; `ready()` waits until every process started
    answers, so that they boot side by side.
    """

    def __init__(self, *, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self.url = ""
        self._names: Counter[str] = Counter()
        self._pending: list[tuple[Process, Callable[[], bool]]] = []

    def _start(
        self, kind: str, argv: list[str], ready: Callable[[Process], bool], env: dict[str, str]
    ) -> Process:
        self._names[kind] += 1
        process = start_process(f"{kind}-{self._names[kind]}", argv, env=env, log_dir=self.log_dir)
        self.processes.append(process)
        self._pending.append((process, lambda: ready(process)))
        return process

    def ready(self, seconds: float = 60) -> None:
        def all_ready() -> bool:
            for process, ready in list(self._pending):
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
                if ready():
                    self._pending.remove((process, ready))
            return not self._pending

        wait_until(all_ready, seconds=seconds, what="the processes to be ready", interval=0.1)

    def start_web(self, *, workers: int = 2) -> Process:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        url = f"{self.url}/api/v1/openapi.json"

        def answers(_: Process) -> bool:
            import httpx

            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        return self._start(
            "web",
            [
                PYTHON, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--access-logfile", "-",
            ],
            answers,
            self.env,
        )  # fmt: skip

    def start_worker(
        self, *, concurrency: int = 2, settings: dict[str, Any] | None = None
    ) -> Process:
        env = self.env
        if settings:
            env = {**env, SETTINGS_ENV: json.dumps({**json.loads(env[SETTINGS_ENV]), **settings})}
        number = self._names["worker"] + 1
        return self._start(
            "worker",
            [
                PYTHON, "-m", "tests.faults.services", "celery", "worker", "--loglevel", "INFO",
                "--concurrency", str(concurrency), "--hostname", f"faults{number}@%h",
                "--without-mingle", "--without-gossip",
            ],
            lambda process: " ready." in process.log_text(),
            env,
        )  # fmt: skip

    def start_beat(self) -> Process:
        return self._start(
            "beat",
            [
                PYTHON, "-m", "tests.faults.services", "celery", "beat", "--loglevel", "INFO",
                "--schedule", str(self.log_dir / "beat-schedule"), "--max-interval", "1",
            ],
            lambda process: "beat: Starting" in process.log_text(),
            self.env,
        )  # fmt: skip

    def logs(self, lines: int = 80) -> str:
        return "\n".join(
            f"----- {process.name} (pid {process.pid}) -----\n{process.tail(lines)}"
            for process in self.processes
        )

    def close(self, seconds: float = 15) -> None:
        """SIGTERM every process at once, SIGKILL what is left after `seconds`."""
        for process in self.processes:
            if not process.killed and process.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + seconds
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            process.kill()


def seed(env: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    """Create a tenant through the services in a subprocess (see `_seed`)."""
    completed = subprocess.run(
        [PYTHON, "-m", "tests.faults.services", "seed"],
        cwd=ROOT,
        env={**env, "REDIS_URL": ""},  # nothing to queue while seeding
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if completed.returncode:
        raise RuntimeError(f"seeding failed:\n{completed.stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    return result


def migrate(database_url: str) -> None:
    env = app_environment(database_url=database_url, redis_url="", provider_url="http://x/")
    completed = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**env, "REDIS_URL": ""},
        capture_output=True,
        timeout=300,
        check=False,
    )
    if completed.returncode:
        raise RuntimeError(f"migrate failed:\n{completed.stderr.decode(errors='replace')}")


# --- reading the private database and calling the API -------------------------------


class Database:
    """Straight SQL on a private database: what the processes committed."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            return connection.execute(sql, params).fetchall()

    def value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.rows(sql, params)[0][0]

    def notifications(self) -> list[dict[str, Any]]:
        columns = ("id", "uid", "channel", "recipient", "status", "attempts", "event_type")
        return [
            dict(zip(columns, row, strict=True))
            for row in self.rows(
                f"SELECT {', '.join(columns)} FROM alerts_notification ORDER BY id"
            )
        ]

    def unsent(self) -> int:
        return int(self.value("SELECT count(*) FROM alerts_notification WHERE status <> 'sent'"))


def deliveries(provider: Provider, receiver: StubServer | None = None) -> Counter[str]:
    """How many times each notification (by uid, hex) was taken: emails by
    the provider (their X-Headroom-Notification header), webhooks by the
    receiver (their `webhook-id`, msg_<uid>).
    """
    taken = provider.accepted_per_notification()
    if receiver is not None:
        taken.update(r.headers["webhook-id"].removeprefix("msg_") for r in receiver.accepted())
    return taken


def ledger_figures(database: Database, organization_id: int) -> dict[str, Any]:
    """The ledger and every total kept from it, for one organization."""

    def total(table: str) -> Any:
        return database.value(
            f"SELECT coalesce(sum(used), 0) FROM {table} WHERE organization_id = %s",
            (organization_id,),
        )

    events = database.rows(
        "SELECT idempotency_key, credits FROM billing_usageevent WHERE organization_id = %s",
        (organization_id,),
    )
    return {
        "keys": Counter(key for key, _ in events),
        "events": sum((credits for _, credits in events), start=Decimal(0)),
        "organization": total("billing_organizationusage"),
        "members": total("billing_memberusage"),
        "sources": total("billing_sourceusage"),
        "days": total("billing_dailyusage"),
    }


@dataclass
class Api:
    url: str
    key: str

    def post(self, path: str, body: dict[str, Any], *, timeout: float = 10) -> Any:
        import httpx

        return httpx.post(
            f"{self.url}/api/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
        )


# --- entry points of the subprocesses -------------------------------------------------


def _celery(argv: list[str]) -> None:
    """`celery -A config <argv>`, after applying the tests' settings."""
    import django

    django.setup()
    from django.conf import settings

    from config.celery import app

    overrides: dict[str, Any] = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    for name, value in overrides.items():
        setattr(settings, name, value)
        if name.startswith("CELERY_"):
            app.conf[name.removeprefix("CELERY_").lower()] = value
    print(f"faults: settings {sorted(overrides)} set for this process", flush=True)
    app.start(argv)


def _seed(spec: dict[str, Any]) -> dict[str, Any]:
    """An organization with `admins` admins (admin-0…), `members` members
    (member-0…), absolute `alerts` (threshold, optional `admins`: indexes of
    specific admins), an optional `webhook_url` (every event type), an optional
    per-user `default_limit`, and an API key.
    """
    import django

    django.setup()
    from decimal import Decimal

    from accounts.services import api_key_create, membership_create, organization_create
    from alerts.services.changes import limit_policy_update
    from alerts.services.configuration import alert_create
    from alerts.webhooks import webhook_endpoint_create

    slug = spec["slug"]
    organization = organization_create(slug=slug, name=f"Faults {slug}")
    admins = [
        membership_create(
            organization=organization,
            email=f"admin{i}@{slug}.test",
            role="admin",
            external_id=f"admin-{i}",
        )
        for i in range(spec.get("admins", 1))
    ]
    members = [
        membership_create(
            organization=organization, email=f"member{i}@{slug}.test", external_id=f"member-{i}"
        )
        for i in range(spec.get("members", 0))
    ]
    for alert in spec.get("alerts", []):
        chosen = [admins[i] for i in alert.get("admins", [])]
        alert_create(
            organization=organization,
            threshold_type="absolute",
            threshold=Decimal(str(alert["threshold"])),
            notify="specific_admins" if chosen else "all_admins",
            admins=chosen,
        )
    if spec.get("webhook_url"):
        webhook_endpoint_create(
            organization=organization,
            url=spec["webhook_url"],
            events=["alert.triggered", "user_alert.triggered", "user_limit.reached"],
        )
    if spec.get("default_limit") is not None:
        limit_policy_update(
            organization=organization,
            enabled=True,
            default_limit=Decimal(str(spec["default_limit"])),
        )
    _, key = api_key_create(organization=organization, name="faults")
    return {
        "organization_id": organization.pk,
        "api_key": key,
        "admins": [m.user.email for m in admins],
        "members": [m.external_id for m in members],
    }


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or [""]
    if command == "celery":
        _celery(rest)
    elif command == "seed":
        print(json.dumps(_seed(json.loads(sys.stdin.read()))), flush=True)
    else:
        raise SystemExit("usage: python -m tests.faults.services celery ARGS... | seed < spec.json")
