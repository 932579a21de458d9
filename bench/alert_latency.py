"""Alert latency: from the ingest call that crosses a threshold to the email
handed to the provider, over real processes: gunicorn, a Celery worker on
Redis, PostgreSQL, and a local stand-in for Postmark (tests/stubs.py).

    python -m bench.alert_latency [--firings 120]   # this figure alone

`make bench` measures it idle and under ingest load (see bench/run.py).
Uses (and recreates) the scratch database `headroom_bench`; loopback only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
import urllib.request
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bench import loadgen, stack
from bench.fixtures import Tenant, tenant_create


def firing_tenants(count: int, *, prefix: str) -> list[Tenant]:
    """`count` organizations, each with one admin, one alert at 1 credit and a key."""
    return [
        tenant_create(f"{prefix}-{index}", alerts=1, alert_threshold=Decimal(1))
        for index in range(count)
    ]


def measure(
    url: str, provider: Any, tenants: Sequence[Tenant], *, spacing: float = 0.05
) -> tuple[list[float], list[float]]:
    """One crossing ingest per tenant, `spacing` seconds apart. Returns the
    latency of each email, from just before its ingest call was sent, and the
    duration of each ingest call (both sorted, in ms).
    """
    already = len(provider.accepted())
    started: dict[str, float] = {}
    calls: list[float] = []
    for tenant in tenants:
        admin = tenant.users[0]
        body = json.dumps(
            {"events": [{"idempotency_key": f"cross-{tenant.slug}", "user": admin, "credits": 1}]}
        ).encode()
        request = urllib.request.Request(
            f"{url}/api/v1/usage",
            data=body,
            headers={
                "Authorization": f"Bearer {tenant.api_key}",
                "Content-Type": "application/json",
            },
        )
        started[admin] = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
        calls.append((time.monotonic() - started[admin]) * 1000)
        time.sleep(spacing)
    emails = provider.wait_for(already + len(tenants), seconds=60)[already:]
    latencies = [
        (email.at - started[email.json()["To"]]) * 1000
        for email in emails
        if email.json()["To"] in started
    ]
    return sorted(latencies), sorted(calls)


def _ingest_load(url: str, tenants: list[Tenant], seconds: float, clients: int) -> None:
    from bench.throughput import Ingest

    factory = Ingest(url, tenants, 1000)
    loadgen.closed_loop(
        url, factory, clients=clients, seconds=seconds, max_requests=int(seconds * 50)
    )


def ingest_load(
    url: str, tenants: list[Tenant], *, seconds: float, clients: int = 2
) -> multiprocessing.process.BaseProcess:
    """Batch ingest from another process for at most `seconds`: load that does
    not share this process's interpreter with the measurement.
    """
    process = multiprocessing.get_context("spawn").Process(
        target=_ingest_load, args=(url, tenants, seconds, clients), daemon=True
    )
    process.start()
    return process


def summary(latencies: Sequence[float]) -> dict[str, float]:
    return {
        "firings": len(latencies),
        "p50_ms": round(loadgen.percentile(latencies, 50), 1),
        "p99_ms": round(loadgen.percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=float("nan")), 1),
    }


def main() -> None:
    from tests.stubs import postmark_stub

    parser = argparse.ArgumentParser()
    parser.add_argument("--firings", type=int, default=120)
    args = parser.parse_args()
    stack.check_services()
    stack.recreate_database()
    stack.flush_redis()
    with postmark_stub() as provider:
        env = stack.environment(provider_url=provider.url)
        stack.migrate(env)
        stack.django_setup(env)
        tenants = firing_tenants(args.firings, prefix="alert")
        with stack.servers(env) as servers:
            latencies, _ = measure(servers.url, provider, tenants)
    result = summary(latencies)
    print(
        f"alert latency over {result['firings']} firings: p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
