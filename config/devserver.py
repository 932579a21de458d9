"""`make run`: migrate, load the demo organization, then serve with a worker.

Started as `python -m config.devserver`. Every process it starts gets its own
process group, so that Ctrl-C or SIGTERM stops them and their children too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 10


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


def main() -> None:
    port = os.environ.get("PORT", "8000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"PORT={port!r} is not a port number.")

    _run_once(_manage("migrate", "--noinput", "-v", "0"))
    _run_once(_manage("seed_demo"))

    processes = [_start(_manage("runserver", f"127.0.0.1:{port}"))]
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
