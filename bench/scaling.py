"""Scaling: the cost of one event for one organization and one user, in a
small fixture and in a big one, on the same code path; ratio = big / small.

The probe goes through the whole request path in-process (Django's test
Client: middleware, API key, django-ninja, the service, PostgreSQL), with no
socket in between, so that what differs is the data and not the noise of a
loaded network stack: a batch of 100 events for one user (`POST /usage`, cost
per event) and single consumes of that user (`POST /consume`, cost per call).
The probes run side by side: in each round a batch per probe, then consumes
taking turns in an order shuffled every round; a ratio is the median over
rounds of big / small, so that what disturbs the machine for a moment
disturbs both sides of a pair alike. The fixture with a single organization
is a database of its own (`headroom_bench_small`), which the probe switches
this process's connection to for its turn.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from bench.fixtures import Tenant

BATCH_EVENTS = 100
CONSUMES_PER_ROUND = 10


class OtherDatabase:
    """A second database, made this thread's `default` connection on demand:
    the application's code then reads and writes it unchanged.
    """

    def __init__(self, name: str) -> None:
        from django.db import DEFAULT_DB_ALIAS, connections

        default = connections[DEFAULT_DB_ALIAS]
        self.wrapper = type(default)({**default.settings_dict, "NAME": name}, DEFAULT_DB_ALIAS)

    @contextmanager
    def active(self) -> Iterator[None]:
        from django.db import DEFAULT_DB_ALIAS, connections

        saved = connections[DEFAULT_DB_ALIAS]
        connections[DEFAULT_DB_ALIAS] = self.wrapper
        try:
            yield
        finally:
            connections[DEFAULT_DB_ALIAS] = saved

    def close(self) -> None:
        self.wrapper.close()


@dataclass
class Probe:
    name: str
    tenant: Tenant
    user: str
    database: OtherDatabase | None = None
    # Meters its batches mix (SPEC §10), an event of each in turn; none: credits.
    meters: tuple[str, ...] = ()
    # One value per round: seconds per event of the batch, and the median
    # seconds per consume of the round.
    ingest: list[float] = field(default_factory=list)
    consume: list[float] = field(default_factory=list)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def post(self, client: Any, path: str, payload: dict[str, Any], status: int) -> float:
        """One request through the whole stack, on this probe's database."""
        body = json.dumps(payload)
        headers = {"Authorization": f"Bearer {self.tenant.api_key}"}
        with self.database.active() if self.database else nullcontext():
            started = time.perf_counter()
            response = client.post(path, body, content_type="application/json", headers=headers)
            elapsed = time.perf_counter() - started
        assert response.status_code == status, response.content
        return elapsed

    def ingest_batch(self, client: Any, index: int) -> float:
        events = [
            {
                "idempotency_key": f"scale-{self.run}-{index}-{j}",
                "user": self.user,
                "credits": 1,
                "source": "agent",
            }
            for j in range(BATCH_EVENTS)
        ]
        for j, event in enumerate(events if self.meters else ()):
            # A quantity for sum and max, a property for unique_count: one
            # value new to the period in every other event of the batch.
            event["meter"] = self.meters[j % len(self.meters)]
            event["quantity"] = j % 7 + 1
            event["properties"] = {"user_id": f"{self.run}-{index}-{j // 2}"}
        return self.post(client, "/api/v1/usage", {"events": events}, 202) / BATCH_EVENTS

    def consume_one(self, client: Any, index: int, k: int) -> float:
        payload = {"user": self.user, "credits": 1, "idempotency_key": f"c-{self.run}-{index}-{k}"}
        return self.post(client, "/api/v1/consume", payload, 200)


def ratio(small: Probe, big: Probe, kind: str) -> float:
    """The median over rounds of big / small, each round's pair measured
    side by side: what disturbs the machine then disturbs both.
    """
    pairs = zip(getattr(big, kind), getattr(small, kind), strict=True)
    return statistics.median(b / s for b, s in pairs)


def measure(probes: list[Probe], *, rounds: int = 20, warmup: int = 3, seconds: float = 60) -> None:
    """`rounds` rounds (at most `seconds`): in each, one 100-event batch per
    probe, then CONSUMES_PER_ROUND consumes per probe, one probe after the
    other, in an order shuffled every round.
    """
    from django.test import Client

    client = Client()
    order = random.Random(7)
    deadline = time.monotonic() + seconds
    for index in range(warmup + rounds):
        if time.monotonic() > deadline:
            break
        record = index >= warmup
        shuffled = order.sample(probes, len(probes))
        batch = {probe.name: probe.ingest_batch(client, index) for probe in shuffled}
        consumes: dict[str, list[float]] = {probe.name: [] for probe in probes}
        for k in range(CONSUMES_PER_ROUND):
            for probe in order.sample(probes, len(probes)):
                consumes[probe.name].append(probe.consume_one(client, index, k))
        if record:
            for probe in probes:
                probe.ingest.append(batch[probe.name])
                probe.consume.append(statistics.median(consumes[probe.name]))
