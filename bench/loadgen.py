"""A light HTTP load generator: asyncio over raw sockets, one connection per
request (`Connection: close`, as gunicorn's sync workers answer anyway).

Much cheaper per request than a full client library, so that on two cores the
load generator is not what limits the server; each run reports the CPU it
used itself (`client_cpu`, in cores) to show it.

Two shapes:
- `closed_loop`: N clients, each sending its next request when the previous
  one is answered: the most requests per second N clients get.
- `open_loop`: requests sent on a schedule (t0 + i / rate) whatever the
  answers; latency counts from the scheduled time, so queueing is not hidden.

Both are bounded in requests and in time.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# (request index, client index) -> the request's bytes; open loops pass the index twice.
RequestFactory = Callable[[int, int], bytes]
REQUEST_TIMEOUT = 15.0
# An open loop waits this long past its schedule; what is still unanswered then
# counts as slower than anything measured.
OPEN_LOOP_GRACE = 10.0


def request_bytes(*, host: str, path: str, api_key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `values` (any order); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Outcome:
    """What a run got: latencies of the answered requests, in seconds."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    client_cpu: float = 0.0
    offered: int = 0

    @property
    def unanswered(self) -> int:
        """Requests never answered (open loop: still waiting at the cut-off)."""
        answered = sum(self.statuses.values()) + sum(self.errors.values())
        return max(0, self.offered - answered)

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def ms(self, p: float) -> float:
        """Latency percentile in ms; unanswered and failed requests count as
        infinitely slow, so that a run that drops requests cannot look fast.
        """
        lost = self.offered - self.ok if self.offered else 0
        return percentile(self.latencies + [math.inf] * lost, p) * 1000

    def summary(self) -> dict[str, Any]:
        """Latencies in ms, None where unanswered requests make them unbounded."""
        return {
            "offered": self.offered,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "unanswered": self.unanswered,
            "wall_s": round(self.wall, 3),
            "requests_per_s": round(self.throughput, 1),
            "p50_ms": _finite(self.ms(50)),
            "p95_ms": _finite(self.ms(95)),
            "p99_ms": _finite(self.ms(99)),
            "max_answered_ms": _finite(max(self.latencies, default=math.inf) * 1000),
            "client_cpu_cores": round(self.client_cpu, 2),
        }


async def _send(host: str, port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        data = await reader.read()  # to EOF: the server closes after its answer
    finally:
        writer.close()
    if not data.startswith(b"HTTP/1."):
        raise ConnectionError("no HTTP answer")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), body


async def _one(
    host: str, port: int, raw: bytes, outcome: Outcome, started: float
) -> tuple[int, bytes] | None:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            status, body = await _send(host, port, raw)
    except (OSError, TimeoutError, ValueError) as error:
        outcome.errors[type(error).__name__] += 1
        return None
    outcome.statuses[status] += 1
    if 200 <= status < 300:
        outcome.latencies.append(time.perf_counter() - started)
    return status, body


def closed_loop(
    url: str,
    make_request: RequestFactory,
    *,
    clients: int,
    seconds: float,
    max_requests: int,
    check: Callable[[int, bytes], None] | None = None,
) -> Outcome:
    """`clients` clients send back to back until `seconds` or `max_requests`."""
    host, port = _host_port(url)

    async def run() -> Outcome:
        outcome = Outcome()
        counter = itertools.count()
        deadline = time.perf_counter() + seconds

        async def client(number: int) -> None:
            while time.perf_counter() < deadline:
                index = next(counter)
                if index >= max_requests:
                    return
                outcome.offered += 1
                raw = make_request(index, number)
                started = time.perf_counter()
                answer = await _one(host, port, raw, outcome, started)
                if answer is not None and check is not None:
                    check(*answer)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(number) for number in range(clients)))
        outcome.wall = time.perf_counter() - wall
        outcome.client_cpu = (time.process_time() - cpu) / outcome.wall
        return outcome

    return asyncio.run(run())


def open_loop(
    url: str,
    make_request: RequestFactory,
    *,
    rate: float,
    seconds: float,
    max_in_flight: int = 256,
    check: Callable[[int, bytes], None] | None = None,
) -> Outcome:
    """`rate` requests per second for `seconds`, each on its schedule.

    At most `max_in_flight` connections are open at once; a request waiting
    for one is late, and its latency still counts from its scheduled time.
    """
    host, port = _host_port(url)
    total = int(rate * seconds)

    async def run() -> Outcome:
        outcome = Outcome(offered=total)
        slots = asyncio.Semaphore(max_in_flight)

        async def fire(index: int, scheduled: float) -> None:
            async with slots:
                answer = await _one(host, port, make_request(index, index), outcome, scheduled)
            if answer is not None and check is not None:
                check(*answer)

        cpu = time.process_time()
        start = time.perf_counter() + 0.05
        tasks = []
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(index, scheduled)))
        await asyncio.wait(tasks, timeout=OPEN_LOOP_GRACE)
        outcome.wall = time.perf_counter() - start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        outcome.client_cpu = (time.process_time() - cpu) / outcome.wall
        return outcome

    return asyncio.run(run())


def _finite(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)
