"""Local HTTP servers posing as the outside world: an email provider with
Postmark's API, and a webhook receiver. Both on 127.0.0.1, both able to fail
on purpose, both recording what they were sent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StubServer:
    url: str
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    failure_status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.headers.get("x-stub-outcome") == "accepted"]

    def wait_for(self, count: int, seconds: float = 30) -> list[Received]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            accepted = self.accepted()
            if len(accepted) >= count:
                return accepted
            time.sleep(0.05)
        raise AssertionError(f"expected {count} accepted requests, got {len(self.accepted())}")


def wait_until(
    condition: Callable[[], Any],
    seconds: float = 30,
    *,
    what: str = "the condition to come true",
    interval: float = 0.05,
) -> Any:
    """Poll `condition` until it is truthy (and return it), for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(interval)


def _handler(stub: StubServer, answer: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with stub.lock:
                failing = stub.fail_next > 0
                if failing:
                    stub.fail_next -= 1
                headers["x-stub-outcome"] = "failed" if failing else "accepted"
                stub.received.append(Received(self.path, headers, body, time.monotonic()))
            status, payload = (
                (stub.failure_status, {"Message": "unavailable"}) if failing else answer(body)
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


S = TypeVar("S", bound=StubServer)


@contextmanager
def _serve(stub: S, handler: type[BaseHTTPRequestHandler]) -> Iterator[S]:
    """Serve `handler` (which records into `stub`) on a free loopback port, in
    a thread, until the block ends; `stub.url` is set to its address.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def _postmark_answer(body: bytes) -> tuple[int, dict[str, Any]]:
    message = json.loads(body)
    return 200, {
        "To": message.get("To"),
        "SubmittedAt": "2026-01-01T00:00:00Z",
        "MessageID": str(uuid.uuid4()),
        "ErrorCode": 0,
        "Message": "OK",
    }


@contextmanager
def postmark_stub() -> Iterator[StubServer]:
    """Anymail's Postmark backend pointed here (ANYMAIL_POSTMARK_API_URL) sends to it."""
    stub = StubServer(url="")
    with _serve(stub, _handler(stub, _postmark_answer)):
        yield stub


@contextmanager
def webhook_receiver() -> Iterator[StubServer]:
    stub = StubServer(url="")
    with _serve(stub, _handler(stub, lambda body: (200, {"ok": True}))):
        yield stub
