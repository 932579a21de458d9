"""Physical baselines, measured from this process: what Redis and PostgreSQL
take for the least one could ask of them, and the in-process cost of the
gate (`alerts.services.consume.usage_consume` called directly, no HTTP).
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.fixtures import Tenant
from bench.loadgen import percentile
from bench.stack import DATABASE, REDIS_URL

DSN = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
COPY_TABLE = "bench_copy_baseline"
COPY_COLUMNS = (
    "organization_id, membership_id, meter, credits, source, timestamp, period_start, "
    "idempotency_key, fingerprint, properties, recorded_at"
)


@dataclass
class Latencies:
    seconds: list[float]

    def ms(self, p: float) -> float:
        return percentile(self.seconds, p) * 1000

    def summary(self) -> dict[str, float]:
        return {
            "count": len(self.seconds),
            "p50_ms": round(self.ms(50), 4),
            "p95_ms": round(self.ms(95), 4),
            "p99_ms": round(self.ms(99), 4),
        }


def _timed(call: Callable[[], Any], count: int, seconds: float, warmup: int = 20) -> Latencies:
    for _ in range(warmup):
        call()
    out: list[float] = []
    deadline = time.monotonic() + seconds
    while len(out) < count and time.monotonic() < deadline:
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return Latencies(out)


def redis_ping(count: int = 2000) -> Latencies:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    return _timed(client.ping, count, seconds=10)


def postgres_round_trip(count: int = 2000) -> Latencies:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as connection:
        return _timed(lambda: connection.execute("SELECT 1").fetchone(), count, seconds=10)


def postgres_durable_write(count: int = 500) -> Latencies:
    """One-row INSERT and COMMIT: the least a recorded consume must wait for."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS bench_write_baseline (id bigserial, v int)")
        return _timed(
            lambda: connection.execute("INSERT INTO bench_write_baseline (v) VALUES (1)"),
            count,
            seconds=10,
        )


def copy_rows(batches: Sequence[bytes], *, streams: int, seconds: float = 60) -> tuple[int, float]:
    """COPY the batches (text format, one transaction each) into a scratch
    table shaped like the ledger (same columns, constraints and indexes),
    over `streams` connections. Returns (rows copied, wall seconds).
    """
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
        connection.execute(
            f"CREATE TABLE {COPY_TABLE} (LIKE billing_usageevent "
            "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
    pending = list(batches)
    lock = threading.Lock()
    copied = [0]
    failures: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def stream() -> None:
        try:
            _stream()
        except BaseException as error:
            failures.append(error)

    def _stream() -> None:
        with psycopg.connect(DSN) as connection:
            while time.monotonic() < deadline:
                with lock:
                    if not pending:
                        return
                    data = pending.pop()
                with connection.cursor() as cursor:
                    with cursor.copy(f"COPY {COPY_TABLE} ({COPY_COLUMNS}) FROM STDIN") as copy:
                        copy.write(data)
                    rows = cursor.rowcount
                connection.commit()
                with lock:
                    copied[0] += rows

    threads = [threading.Thread(target=stream) for _ in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    if failures:
        raise failures[0]
    return copied[0], time.perf_counter() - started


def copy_batch(
    *, organization_id: int, membership_ids: Sequence[int], size: int, period_start: datetime
) -> bytes:
    """`size` ledger rows like those of an ingest batch, in COPY's text format."""
    now = datetime.now(UTC).isoformat()
    start = period_start.isoformat()
    run = uuid.uuid4().hex
    out = io.StringIO()
    for index in range(size):
        out.write(
            f"{organization_id}\t{membership_ids[index % len(membership_ids)]}\tcredits\t0.5\t"
            f"agent\t{now}\t{start}\tcopy-{run}-{index}\t{'0' * 64}\t{{}}\t{now}\n"
        )
    return out.getvalue().encode()


def consume_in_process(tenant: Tenant, *, count: int = 1000) -> tuple[Latencies, int]:
    """`usage_consume` called directly; also the number of queries one call makes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Membership
    from alerts.services.consume import usage_consume

    organization = tenant.organization()
    members = list(
        Membership.objects.filter(organization=organization, external_id__in=tenant.users[:50])
    )
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))

    def call() -> None:
        index = next(counter)
        result = usage_consume(
            organization=organization,
            membership=members[index % len(members)],
            credits=Decimal(1),
            idempotency_key=f"inproc-{run}-{index}",
        )
        assert result.decision.allowed

    with CaptureQueriesContext(connection) as captured:
        call()
    queries = len(captured.captured_queries)
    return _timed(call, count, seconds=20), queries
