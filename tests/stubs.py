"""Local HTTP servers posing as the outside world: an email provider with
Postmark's API, and a webhook receiver (plain or over TLS). All on
127.0.0.1, able to fail on purpose, recording what they were sent. The
richer Postmark stand-in of the fault tests (tests/faults/services.py) is
served and answers through the same pieces.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

Answer = tuple[int, dict[str, Any]]


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

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    def record(self, path: str, headers: dict[str, str], body: bytes, outcome: str) -> Received:
        """Keep a request, its `outcome` in the header x-stub-outcome."""
        received = Received(path, {**headers, "x-stub-outcome": outcome}, body, time.monotonic())
        with self.lock:
            self.received.append(received)
        return received

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


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers JSON."""

    def log_message(self, *args: Any) -> None:
        pass

    def lowered_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def answer_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the sender is gone


def _handler(
    stub: StubServer,
    answer: Callable[[bytes], Answer],
    search: Callable[[str], Answer] | None = None,
) -> type[BaseHTTPRequestHandler]:
    """POSTs are recorded and answered by `answer(body)` (or fail, while
    `stub.fail_next` lasts); GETs, only with `search`, by `search(path)`.
    """

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            with stub.lock:
                failing = stub.fail_next > 0
                if failing:
                    stub.fail_next -= 1
            stub.record(
                self.path, self.lowered_headers(), body, "failed" if failing else "accepted"
            )
            if failing:
                self.answer_json(stub.failure_status, {"Message": "unavailable"})
            else:
                self.answer_json(*answer(body))

        def do_GET(self) -> None:
            if search is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, "Unsupported method ('GET')")
                return
            stub.record(self.path, self.lowered_headers(), b"", "searched")
            self.answer_json(*search(self.path))

    return Handler


S = TypeVar("S", bound=StubServer)


@contextmanager
def serve(
    stub: S, handler: type[BaseHTTPRequestHandler], *, tls: tuple[Path, Path] | None = None
) -> Iterator[S]:
    """Serve `handler` (which records into `stub`) on a free loopback port, in
    a thread, until the block ends; `stub.url` is set to its address. With
    `tls` (a certificate and its key), over HTTPS.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    stub.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def postmark_sent(body: bytes, message_id: str | None = None) -> Answer:
    """Postmark's answer to an email it accepted."""
    message = json.loads(body)
    return 200, {
        "To": message.get("To"),
        "SubmittedAt": "2026-01-01T00:00:00Z",
        "MessageID": message_id or str(uuid.uuid4()),
        "ErrorCode": 0,
        "Message": "OK",
    }


def postmark_unavailable(status: int) -> Answer:
    return status, {"ErrorCode": 0, "Message": "unavailable"}


@contextmanager
def postmark_stub(*, search_status: int | None = None) -> Iterator[StubServer]:
    """Anymail's Postmark backend pointed here (ANYMAIL_POSTMARK_API_URL) sends
    to it. With `search_status`, its outbound message search (a GET) answers
    that status as unavailable; without, it has no search.
    """
    stub = StubServer(url="")
    search = None if search_status is None else lambda path: postmark_unavailable(search_status)
    with serve(stub, _handler(stub, postmark_sent, search)):
        yield stub


@contextmanager
def webhook_receiver(*, tls: tuple[Path, Path] | None = None) -> Iterator[StubServer]:
    """A webhook receiver answering 200; with `tls` (a certificate and its key), over HTTPS."""
    stub = StubServer(url="")
    with serve(stub, _handler(stub, lambda body: (200, {"ok": True})), tls=tls):
        yield stub
