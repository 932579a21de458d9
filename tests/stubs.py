"""Local HTTP servers posing as the outside world: an email provider with
Postmark's API, and a webhook receiver. Both on 127.0.0.1, both able to fail
on purpose, both recording what they were sent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


def wait_until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


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


@contextmanager
def _serve(answer: Any) -> Iterator[StubServer]:
    stub = StubServer(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub, answer))
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
    with _serve(_postmark_answer) as stub:
        yield stub


@contextmanager
def webhook_receiver() -> Iterator[StubServer]:
    with _serve(lambda body: (200, {"ok": True})) as stub:
        yield stub
