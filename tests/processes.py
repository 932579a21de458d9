"""Helpers for tests that start real processes (make run, gunicorn, Celery):
a free port, waiting for a page to answer, and reading a process's output.
No Django here: tests/faults/services.py imports it before any settings.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_once_up(url: str, seconds: float = 30) -> int:
    """The status of a GET of `url`, retried while nothing answers, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


class ProcessOutput:
    """Everything a process prints, read on a thread: a pipe left full would
    block the process (a server's access log, and so the server).
    """

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(process,), daemon=True)
        self._thread.start()

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def tail(self, count: int = 40) -> str:
        return "\n".join(self.lines[-count:])

    def wait_for(self, marker: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(marker in line for line in self.lines):
                return
            time.sleep(0.2)
        raise AssertionError(f"{marker!r} not printed; got:\n" + "\n".join(self.lines))

    def finish(self) -> list[str]:
        """All of it, once the process has ended (or after 30 s)."""
        self._thread.join(timeout=30)
        return self.lines
