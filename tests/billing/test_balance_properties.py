"""The credit balance as a state machine (SPEC §9): grants (pending, expiring,
any priority), voids, the clock moving (expiries, new periods), the periodic
check, consumes and ingests, in any order. An oracle keeps the balance as
the SPEC defines it; after every step:

- a consume is allowed exactly when the organization does not block, has
  no balance, or the cost is within its balance, and it never passes it;
- every grant's `remaining` is what drawdown in the SPEC's order leaves
  (allowance first, then priority, earliest expiry, oldest), never below 0;
- every grant's ledger entries sum to its `remaining`;
- the balance the API reads is the oracle's, and never negative.

Every example runs in a transaction rolled back at its end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from alerts.services.consume import usage_consume
from alerts.services.credits import credit_balances_check, credit_grant_create, credit_grant_void
from alerts.services.ingest import UsageInput, usage_ingest
from billing.balance import credit_balance_get
from billing.models import CreditGrant
from billing.periods import period_containing
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED
from billing.services.grants import GrantInput
from tests.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

D = Decimal
ZERO = D(0)
ANCHOR_DAY = 10
FOREVER = datetime.max.replace(tzinfo=UTC)

costs = st.one_of(
    st.integers(min_value=1, max_value=15).map(D),
    st.decimals(min_value=D("0.000001"), max_value=D(12), places=6),
)


@dataclass
class ModelGrant:
    pk: int
    remaining: Decimal
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    seq: int
    voided: bool = False

    def active(self, now: datetime) -> bool:
        return (
            not self.voided
            and self.remaining > 0
            and self.effective_at <= now
            and (self.expires_at is None or self.expires_at > now)
        )

    def order(self) -> tuple[object, ...]:
        return (self.priority, self.expires_at or FOREVER, self.seq)


class BalanceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.now = datetime(2026, 5, 20, 9, 0, tzinfo=UTC)
        self.clock = time_machine.travel(self.now, tick=False)
        self.clock.start()
        self.grants: list[ModelGrant] = []
        self.used: dict[datetime, Decimal] = {}
        self.keys = 0

    @initialize(
        allowance=st.one_of(st.none(), st.integers(min_value=1, max_value=40).map(D)),
        blocks=st.booleans(),
    )
    def start(self, allowance: Decimal | None, blocks: bool) -> None:
        self.organization = OrganizationFactory(
            anchor_day=ANCHOR_DAY, credit_allowance=allowance, block_when_exhausted=blocks
        )
        self.member = MembershipFactory(organization=self.organization)

    def teardown(self) -> None:
        self.clock.stop()
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    # The oracle

    def period_start(self) -> datetime:
        return period_containing(self.now, anchor_day=ANCHOR_DAY).start

    def allowance_left(self) -> Decimal:
        allowance = self.organization.credit_allowance or ZERO
        return max(allowance - self.used.get(self.period_start(), ZERO), ZERO)

    def active(self) -> list[ModelGrant]:
        return sorted((g for g in self.grants if g.active(self.now)), key=ModelGrant.order)

    def balance(self) -> Decimal | None:
        if self.organization.credit_allowance is None and not self.grants:
            return None
        return self.allowance_left() + sum((g.remaining for g in self.active()), ZERO)

    def spend(self, cost: Decimal) -> None:
        beyond = cost - min(cost, self.allowance_left())
        for grant in self.active():
            take = min(grant.remaining, beyond)
            grant.remaining -= take
            beyond -= take
        start = self.period_start()
        self.used[start] = self.used.get(start, ZERO) + cost

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    # The steps

    @rule(
        credits=st.integers(min_value=1, max_value=20).map(D),
        priority=st.sampled_from([1, 50, 50]),
        starts_in=st.sampled_from([None, None, timedelta(hours=5)]),
        lasts=st.sampled_from([None, timedelta(hours=2), timedelta(days=40)]),
    )
    def grant(
        self,
        credits: Decimal,
        priority: int,
        starts_in: timedelta | None,
        lasts: timedelta | None,
    ) -> None:
        effective_at = self.now + starts_in if starts_in else self.now
        expires_at = effective_at + lasts if lasts else None
        created = credit_grant_create(
            organization=self.organization,
            grant=GrantInput(
                "purchased",
                credits,
                priority=priority,
                effective_at=effective_at if starts_in else None,
                expires_at=expires_at,
            ),
        ).grant
        self.grants.append(
            ModelGrant(created.pk, credits, priority, effective_at, expires_at, len(self.grants))
        )

    @precondition(lambda self: self.grants)
    @rule(index=st.integers(min_value=0, max_value=50))
    def void(self, index: int) -> None:
        grant = self.grants[index % len(self.grants)]
        credit_grant_void(organization=self.organization, grant_id=grant.pk)
        grant.voided, grant.remaining = True, ZERO

    @rule(cost=costs)
    def consume(self, cost: Decimal) -> None:
        balance = self.balance()
        expected = not (
            self.organization.block_when_exhausted and balance is not None and cost > balance
        )
        decision = usage_consume(
            organization=self.organization,
            membership=self.member,
            credits=cost,
            idempotency_key=self.key(),
        ).decision
        assert decision.allowed == expected, (cost, balance)
        if decision.allowed:
            self.spend(cost)
        else:
            assert decision.reason == ORGANIZATION_CREDITS_EXHAUSTED
            assert decision.balance == balance

    @rule(cost=costs)
    def ingest(self, cost: Decimal) -> None:
        usage_ingest(
            organization=self.organization,
            events=[UsageInput(self.key(), cost, user=self.member.external_id)],
        )
        self.spend(cost)

    @rule(step=st.sampled_from([timedelta(minutes=30), timedelta(hours=3), timedelta(days=2)]))
    def time_passes(self, step: timedelta) -> None:
        self.clock.stop()
        self.now += step
        self.clock = time_machine.travel(self.now, tick=False)
        self.clock.start()

    @precondition(lambda self: self.grants)
    @rule()
    def until_the_next_moment_a_grant_changes(self) -> None:
        """To the instant a grant becomes effective or expires: exactness at the boundary."""
        moments = [
            moment
            for grant in self.grants
            for moment in (grant.effective_at, grant.expires_at)
            if moment is not None and moment > self.now
        ]
        if moments:
            self.time_passes(min(moments) - self.now)

    @rule()
    def periodic_check(self) -> None:
        credit_balances_check(now=self.now)
        for grant in self.grants:  # the expiry written: `remaining` 0 for good
            if grant.expires_at is not None and grant.expires_at <= self.now:
                grant.remaining = ZERO

    # What must always hold

    @invariant()
    def grants_hold_what_drawdown_in_order_leaves(self) -> None:
        if not hasattr(self, "organization"):
            return
        stored = dict(
            CreditGrant.objects.filter(organization=self.organization).values_list(
                "pk", "remaining"
            )
        )
        for grant in self.grants:
            if grant.expires_at is not None and grant.expires_at <= self.now:
                # Expired: only what the periodic check has written counts.
                assert stored[grant.pk] in (grant.remaining, ZERO)
                continue
            assert stored[grant.pk] == grant.remaining, (grant, stored[grant.pk])
        assert all(value >= 0 for value in stored.values())

    @invariant()
    def each_grants_ledger_sums_to_its_remaining(self) -> None:
        if not hasattr(self, "organization"):
            return
        for grant in CreditGrant.objects.filter(organization=self.organization).annotate(
            total=Sum("entries__credits")
        ):
            assert grant.total == grant.remaining, grant

    @invariant()
    def the_balance_is_the_oracles_and_never_negative(self) -> None:
        if not hasattr(self, "organization"):
            return
        read = credit_balance_get(organization=self.organization, now=self.now).balance
        assert read == self.balance()
        assert read is None or read >= 0


def test_no_interleaving_overdraws_a_grant_or_passes_the_balance(db: None) -> None:
    run_state_machine_as_test(
        BalanceMachine,
        settings=settings(
            max_examples=int(os.environ.get("BALANCE_MAX_EXAMPLES", "60")),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
