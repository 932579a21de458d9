"""`make run`: migrate, load the demo organization, then serve with a worker.

Started as `python -m config.devserver`. It serves with gunicorn as the
Procfile's `web` does (config/gunicorn.py), in every mode: Django's
development server keeps a thread, and a PostgreSQL connection, per idle
keep-alive client, and resets connections when many arrive at once. With
DEBUG on, gunicorn restarts its workers when code or a template changes.

Every process it starts gets its own process group, so that Ctrl-C or
SIGTERM stops them and their children too.

It reads the local `.env` (ENV_FILE) and, when there is none, writes one with
DEBUG on, the DATABASE_URL and REDIS_URL it runs with and a SECRET_KEY: the
settings read the same file, so `.venv/bin/python manage.py ...` in a shell
works on the database `make run` used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import environ
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_list

ROOT = Path(__file__).resolve().parent.parent
# What a first `.env` keeps of the environment make run was started with.
ENV_FILE_URLS = ("DATABASE_URL", "REDIS_URL")
STOP_GRACE_SECONDS = 10
LOCAL_HOSTS = ("127.0.0.1", "localhost")
# Written beside the collected files: what they were collected from.
STATIC_SOURCES_STAMP = ".collected-from"
# Templates are read once per worker (Django's cached loader): with DEBUG on,
# an edit restarts the workers as a code change does.
RELOAD_PATTERNS = ("templates/**/*.html", "templates/**/*.txt", "*/templates/**/*.html")


def env_file_path() -> Path | None:
    """The `.env` make run and the settings share (ENV_FILE; empty: none)."""
    configured = os.environ.get("ENV_FILE", str(ROOT / ".env"))
    return Path(configured) if configured else None


def write_env_file(path: Path, *, environment: Mapping[str, str]) -> None:
    """Write a first `.env`: DEBUG on, the database and Redis this run was
    started with, and a SECRET_KEY so that the file also serves with DEBUG off.
    """
    lines = [
        "# Written by `make run` (config/devserver.py) because there was no .env.",
        "# config/settings.py reads it, so `.venv/bin/python manage.py ...` uses the",
        "# same settings and database. Variables set in the environment win over it.",
        "# Every variable: .env.example. Not committed (.gitignore).",
        # Development's default, even when this run was started with DEBUG=0
        # for a look at production mode: that stays a one-off.
        "DEBUG=true",
        f"SECRET_KEY={secrets.token_urlsafe(50)}",
    ]
    lines += [f"{name}={environment[name]}" for name in ENV_FILE_URLS if environment.get(name)]
    path.write_text("\n".join(lines) + "\n")


def _load_env_file() -> tuple[Path | None, bool]:
    """Read `.env`, writing it first if there is none: (the file, written now)."""
    path = env_file_path()
    if path is None:
        return None, False
    written = not path.exists()
    if written:
        write_env_file(path, environment=os.environ)
    environ.Env.read_env(str(path))
    return path, written


def _describe_modes(*, env_file: Path | None, written: bool) -> None:
    """The first lines: which database and task mode, and from where."""
    where = f" (set in {env_file.name})" if env_file is not None else ""
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url:
        kind = "SQLite" if database_url.startswith("sqlite:") else "PostgreSQL"
        print(f"Database: {kind} from DATABASE_URL{where}")
    else:
        print("Database: SQLite at db.sqlite3 (DATABASE_URL is not set)")
    if os.environ.get("REDIS_URL"):
        print(f"Tasks: Celery worker on Redis from REDIS_URL{where}")
    else:
        print("Tasks: run in-process, no worker (REDIS_URL is not set)")
    if env_file is not None and written:
        print(
            f"Wrote {env_file.name} with this run's settings: `.venv/bin/python manage.py ...`"
            " in a shell uses them too."
        )
    sys.stdout.flush()  # before the output of the commands it starts


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _run_once(command: list[str]) -> None:
    completed = subprocess.run(command, cwd=ROOT, check=False)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=ROOT, start_new_session=True)


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _prepare_environment(*, port: str) -> bool:
    """Settings make run needs that a newcomer has not set; returns DEBUG.

    It serves on 127.0.0.1 only, so those names are always allowed. With
    DEBUG off the settings require a SECRET_KEY: one is made for this run.
    """
    os.environ.setdefault("DEBUG", "true")  # for the commands it starts, too
    debug = env_bool(os.environ, "DEBUG", default=True)
    hosts = env_list(os.environ, "ALLOWED_HOSTS", default=[])
    os.environ["ALLOWED_HOSTS"] = ",".join([*hosts, *(h for h in LOCAL_HOSTS if h not in hosts)])
    os.environ.setdefault("SITE_URL", f"http://127.0.0.1:{port}")
    if not debug and not os.environ.get("SECRET_KEY"):
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
        print("SECRET_KEY is not set: using a random one (log-ins end when this stops).")
    return debug


def _collect_static_if_changed() -> None:
    """With DEBUG off, pages name static files by the hashes in collectstatic's
    manifest, and WhiteNoise serves only what was collected: collect, but only
    when the files to collect (names, sizes, times) differ from last time,
    since collecting takes seconds.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.staticfiles.finders import get_finders
    from django.core.management import call_command

    sources = hashlib.sha256(settings.STORAGES["staticfiles"]["BACKEND"].encode())
    for finder in get_finders():
        for path, storage in sorted(finder.list(["CVS", ".*", "*~"]), key=lambda item: item[0]):
            stat = os.stat(storage.path(path))
            sources.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    stamp = Path(settings.STATIC_ROOT) / STATIC_SOURCES_STAMP
    manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
    if manifest.exists() and stamp.exists() and stamp.read_text() == sources.hexdigest():
        return
    print("Collecting static files (DEBUG is off) ...", flush=True)
    call_command("collectstatic", interactive=False, verbosity=0)
    stamp.write_text(sources.hexdigest())


def _web_server(*, port: str, debug: bool) -> list[str]:
    command = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "config" / "gunicorn.py")]
    # No control socket: it is shared by every gunicorn of the user (two
    # checkouts would take it from each other) and make run has no use for it.
    command += ["--bind", f"127.0.0.1:{port}", "--no-control-socket"]
    if debug:
        command.append("--reload")
        # A pattern that matches no file would print a warning at each start.
        for pattern in RELOAD_PATTERNS:
            if next(ROOT.glob(pattern), None) is not None:
                command += ["--reload-extra-file", pattern]
    return command


def main() -> None:
    env_file, written = _load_env_file()
    _describe_modes(env_file=env_file, written=written)
    port = os.environ.get("PORT", "8000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"PORT={port!r} is not a port number.")
    try:
        debug = _prepare_environment(port=port)
    except ImproperlyConfigured as error:
        sys.exit(str(error))

    _run_once(_manage("migrate", "--noinput", "-v", "0"))
    _run_once(_manage("seed_demo"))
    if not debug:
        _collect_static_if_changed()

    print(
        "Web: gunicorn with config/gunicorn.py, as the Procfile's web"
        + ("; restarts on code and template changes (DEBUG on)" if debug else " (DEBUG off)"),
        flush=True,
    )
    processes = [_start(_web_server(port=port, debug=debug))]
    if os.environ.get("REDIS_URL"):
        # A real worker, with beat embedded for the periodic sweeps.
        celery = [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat"]
        processes.append(_start([*celery, "--loglevel", "INFO", "--concurrency", "2"]))
    print(f"Headroom is at http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        _stop_all(processes)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    parent = os.getppid()
    while True:
        if os.getppid() != parent:  # `make` was killed: we were orphaned
            _stop_all(processes)
            sys.exit(0)
        for process in processes:
            if process.poll() is not None:
                print(f"{process.args!r} exited ({process.returncode}); stopping.", flush=True)
                _stop_all(processes)
                sys.exit(process.returncode or 1)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
