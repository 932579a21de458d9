"""Holds (SPEC §13): what a hold and its settle cost together, beside one
consume of the same credits, in-process (the services called directly, as
`baselines.consume_in_process`), taking turns in one loop so that what
disturbs the machine disturbs both alike.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

from bench.baselines import Latencies
from bench.fixtures import Tenant


@dataclass
class HoldCost:
    consume: Latencies
    hold_and_settle: Latencies
    consume_queries: int
    hold_and_settle_queries: int

    @property
    def ratio(self) -> float:
        """The median over rounds of (hold + settle) / consume, each pair side by side."""
        pairs = zip(self.hold_and_settle.seconds, self.consume.seconds, strict=True)
        return statistics.median(pair / one for pair, one in pairs)


def hold_and_settle_vs_consume(
    tenant: Tenant, *, rounds: int = 300, seconds: float = 30
) -> HoldCost:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Membership
    from alerts.services.consume import usage_consume
    from alerts.services.holds import hold_create, hold_settle

    organization = tenant.organization()
    member = Membership.objects.get(organization=organization, external_id=tenant.users[-1])
    run = uuid.uuid4().hex[:8]

    def consume(index: int) -> None:
        result = usage_consume(
            organization=organization,
            membership=member,
            credits=Decimal(1),
            idempotency_key=f"hc-{run}-{index}",
        )
        assert result.decision.allowed

    def hold_and_settle(index: int) -> None:
        answer = hold_create(
            organization=organization,
            membership=member,
            credits=Decimal(2),
            idempotency_key=f"hh-{run}-{index}",
        )
        assert answer.allowed, answer.body
        hold_settle(organization=organization, hold_id=answer.body["id"], credits=Decimal(1))

    with CaptureQueriesContext(connection) as consumed:
        consume(-1)
    with CaptureQueriesContext(connection) as paired:
        hold_and_settle(-1)
    for index in range(-20, -2):  # warm up
        consume(index)
        hold_and_settle(index)
    singles: list[float] = []
    pairs: list[float] = []
    deadline = time.monotonic() + seconds
    for index in range(rounds):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        consume(index)
        middle = time.perf_counter()
        hold_and_settle(index)
        pairs.append(time.perf_counter() - middle)
        singles.append(middle - started)
    return HoldCost(
        consume=Latencies(singles),
        hold_and_settle=Latencies(pairs),
        consume_queries=len(consumed.captured_queries),
        hold_and_settle_queries=len(paired.captured_queries),
    )
