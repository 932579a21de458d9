"""gunicorn's settings: the Procfile's `web` and `make run` serve with these.

Threads (`gthread`) rather than sync workers: a sync worker is held by one
connection at a time, so idle keep-alive clients would take every worker.
A gthread worker parks idle keep-alive connections in its poller and gives
a thread only to a request, so PostgreSQL connections are bounded by
workers x threads (each thread keeps its own for CONN_MAX_AGE), however many
clients are connected: with the defaults, 8.

`make run` measured it (tests/config/test_devserver.py): 100 idle keep-alive
clients and 40 simultaneous consumes on the defaults, none refused or reset.
"""

from __future__ import annotations

import os


def _whole_number(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise SystemExit(f"{name}={raw!r} must be a whole number, 1 or more.")
    return int(raw)


wsgi_app = "config.wsgi"
worker_class = "gthread"
workers = _whole_number("WEB_CONCURRENCY", 2)
threads = _whole_number("WEB_THREADS", 4)
# Longer than the idle timeout of the proxies usually put in front (60 s),
# so that the proxy, not gunicorn, closes an idle connection: a request sent
# on a connection gunicorn has just closed would fail at the proxy.
keepalive = 75
# Connections waiting to be accepted while every worker is busy (a burst of
# clients at once); the kernel caps it at net.core.somaxconn.
backlog = 2048
accesslog = "-"
