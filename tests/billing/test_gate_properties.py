"""Properties of the gate, over any sequence of consumes and ingests.

Each example builds a fresh organization (an allowance or none, blocking or
not, a limits policy with a default, custom and unlimited limits, excluded
sources), freezes time at a random moment, then runs a random sequence of
steps: consumes (of any member, any cost down to a millionth, any source,
repeated keys), checks, ingests (past periods, events of a `sum` meter
whose credits count like any others, repeated batches) and changes of the
excluded sources. After every step:

- a consume is allowed exactly when SPEC §3 says so, and a refusal gives the
  right reason (`user_limit_reached` when both apply) with the right figures;
  a check gives the same decision without recording anything;
- an allowed consume never takes a member's counted usage past their limit,
  nor, when it blocks, the organization's usage past its allowance (ingest
  may: it is never refused);
- the ledger holds exactly the events recorded, and every running total
  (organization, member used and counted, source, day, and the meter's
  per-period values) equals the sum over the ledger.

Every example runs in a transaction rolled back at its end.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Membership, Organization
from alerts.services.changes import limit_policy_update, organization_update
from alerts.services.consume import usage_consume
from alerts.services.ingest import UsageInput, usage_ingest
from billing.balance import usage_check
from billing.models import (
    CustomLimit,
    DailyUsage,
    MemberUsage,
    Meter,
    MeterUsage,
    OrganizationUsage,
    SourceUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.periods import period_containing
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED, USER_LIMIT_REACHED
from tests.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

D = Decimal
ZERO = D(0)
MEMBERS = 3
SOURCES = ("assistant", "agent", "agent_external", "workflow", "api")
EXCLUDABLE = ("agent_external", "workflow")

amounts = st.one_of(
    st.decimals(min_value=D("0.000001"), max_value=D("0.001"), places=6),  # tiny
    st.decimals(min_value=D("0.000001"), max_value=D(40), places=6),
    st.integers(min_value=1, max_value=20).map(D),
)
limits = st.one_of(
    st.decimals(min_value=D("0.000001"), max_value=D(60), places=6),
    st.integers(min_value=1, max_value=60).map(D),
)
UNLIMITED = "unlimited"


@dataclass(frozen=True)
class Consume:
    member: int
    cost: Decimal
    source: str
    repeat: bool = False  # send the previous consume again, key and all
    # Aim at a cap: cost = what is left of the member's limit or of the
    # allowance, nudged by a millionth either way, so that the boundaries
    # (exactly up to the cap, a millionth past it) are tried every run.
    aim: str | None = None
    nudge: Decimal = ZERO


@dataclass(frozen=True)
class Check:
    member: int
    cost: Decimal
    source: str


@dataclass(frozen=True)
class IngestEvent:
    member: int | None
    cost: Decimal
    source: str
    meter: str
    age: timedelta  # how long before now it happened (negative: just ahead of the clock)


@dataclass(frozen=True)
class Ingest:
    events: tuple[IngestEvent, ...]
    repeat: bool  # send the previous batch again


@dataclass(frozen=True)
class Exclude:
    sources: frozenset[str]


@dataclass(frozen=True)
class ChangeAnchor:
    """An admin moves the anchor day: nothing of the period under way moves."""

    anchor_day: int


@dataclass(frozen=True)
class Scenario:
    now: datetime
    anchor_day: int
    allowance: Decimal | None
    block_when_exhausted: bool
    limits_enabled: bool
    default_limit: Decimal | None
    custom_limits: tuple[Any, ...]  # per member: None (no custom limit), UNLIMITED or a Decimal
    excluded: frozenset[str]
    steps: tuple[Any, ...]


members = st.integers(min_value=0, max_value=MEMBERS - 1)
sources = st.sampled_from(SOURCES)
exclusions = st.frozensets(st.sampled_from(EXCLUDABLE))
ingest_events = st.builds(
    IngestEvent,
    member=st.one_of(st.none(), members),
    cost=amounts,
    source=sources,
    meter=st.sampled_from(["credits", "credits", "credits", "tokens"]),
    age=st.one_of(
        st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=70)),
        st.timedeltas(min_value=timedelta(minutes=-4), max_value=timedelta(0)),
    ),
)
MILLIONTH = D("0.000001")
steps = st.one_of(
    st.builds(Consume, member=members, cost=amounts, source=sources),
    st.builds(
        Consume,
        member=members,
        cost=amounts,
        source=sources,
        aim=st.sampled_from(["limit", "allowance"]),
        nudge=st.sampled_from([-MILLIONTH, ZERO, MILLIONTH]),
    ),
    st.builds(Consume, member=members, cost=amounts, source=sources, repeat=st.just(True)),
    st.builds(Check, member=members, cost=amounts, source=sources),
    st.builds(
        Ingest,
        events=st.lists(ingest_events, min_size=1, max_size=4).map(tuple),
        repeat=st.booleans(),
    ),
    st.builds(Exclude, sources=exclusions),
    st.builds(ChangeAnchor, anchor_day=st.integers(min_value=1, max_value=28)),
)
scenarios = st.builds(
    Scenario,
    now=st.datetimes(
        min_value=datetime(2021, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
    anchor_day=st.integers(min_value=1, max_value=28),
    allowance=st.one_of(st.none(), limits, st.integers(min_value=1, max_value=150).map(D)),
    block_when_exhausted=st.booleans(),
    limits_enabled=st.booleans(),
    default_limit=st.one_of(st.none(), limits),
    custom_limits=st.tuples(*[st.one_of(st.none(), st.just(UNLIMITED), limits)] * MEMBERS),
    excluded=exclusions,
    steps=st.lists(steps, min_size=1, max_size=25).map(tuple),
)


@dataclass
class Run:
    """The organization under test and what the test expects of it."""

    organization: Organization
    members: list[Membership]
    scenario: Scenario
    excluded: frozenset[str]
    exclusions_changed: bool = False
    ledger: dict[str, tuple[int | None, Decimal, str, str, datetime]] = field(default_factory=dict)
    last_consume: tuple[Consume, str, Any] | None = None
    last_batch: list[UsageInput] | None = None
    keys: int = 0

    def key(self) -> str:
        self.keys += 1
        return f"key-{self.keys}"

    def limit_of(self, index: int) -> Decimal | None:
        if not self.scenario.limits_enabled:
            return None
        custom = self.scenario.custom_limits[index]
        if custom is None:
            return self.scenario.default_limit
        return None if custom == UNLIMITED else custom

    def counts(self, source: str) -> bool:
        return source not in self.excluded

    @property
    def now(self) -> datetime:
        return self.scenario.now

    @property
    def period(self) -> Any:
        return period_containing(self.scenario.now, anchor_day=self.scenario.anchor_day)

    def counted_now(self, index: int) -> Decimal:
        membership_id = self.members[index].pk
        return sum(
            (
                credits
                for member, credits, source, meter, moment in self.ledger.values()
                if member == membership_id and self.counts(source) and moment in self.period
            ),
            ZERO,
        )

    def organization_used_now(self) -> Decimal:
        return sum(
            (
                credits
                for _, credits, _, meter, moment in self.ledger.values()
                if moment in self.period
            ),
            ZERO,
        )


def _start(scenario: Scenario) -> Run:
    organization = OrganizationFactory(
        anchor_day=scenario.anchor_day,
        credit_allowance=scenario.allowance,
        block_when_exhausted=scenario.block_when_exhausted,
    )
    memberships = [MembershipFactory(organization=organization) for _ in range(MEMBERS)]
    Meter.objects.get_or_create(
        key="tokens", defaults={"name": "Tokens", "unit": "tokens", "aggregation": "sum"}
    )
    UserLimitPolicy.objects.create(
        organization=organization,
        enabled=scenario.limits_enabled,
        default_limit=scenario.default_limit,
        excluded_sources=sorted(scenario.excluded),
    )
    for membership, custom in zip(memberships, scenario.custom_limits, strict=True):
        if custom is not None:
            CustomLimit.objects.create(
                organization=organization,
                membership=membership,
                limit=None if custom == UNLIMITED else custom,
            )
    return Run(
        organization=organization,
        members=memberships,
        scenario=scenario,
        excluded=scenario.excluded,
    )


def _expected_decision(run: Run, index: int, cost: Decimal, source: str) -> tuple[Any, ...]:
    """SPEC §3, on the ledger: (allowed, reason, used, limit)."""
    limit = run.limit_of(index)
    counted = run.counted_now(index)
    if run.counts(source) and limit is not None and counted + cost > limit:
        return (False, USER_LIMIT_REACHED, counted, limit)
    organization = run.organization
    used = run.organization_used_now()
    allowance = organization.credit_allowance
    if organization.block_when_exhausted and allowance is not None and used + cost > allowance:
        # SPEC §9: `limit` is usage plus the balance before the action (here
        # the allowance left: no grants), the allowance itself until ingest
        # takes usage past it.
        return (False, ORGANIZATION_CREDITS_EXHAUSTED, used, used + max(allowance - used, ZERO))
    return (True, None, counted + (cost if run.counts(source) else ZERO), limit)


def _consume(run: Run, step: Consume) -> None:
    if step.repeat and run.last_consume is not None:
        first_step, key, first_answer = run.last_consume
        before = dict(run.ledger)
        decision = usage_consume(
            organization=run.organization,
            membership=run.members[first_step.member],
            credits=first_step.cost,
            source=first_step.source,
            idempotency_key=key,
        ).decision
        assert decision.as_answer() == first_answer, "a repeated key gets the first answer"
        assert run.ledger == before
        return
    key = run.key()
    cost = _aimed_cost(run, step)
    expected = _expected_decision(run, step.member, cost, step.source)
    decision = usage_consume(
        organization=run.organization,
        membership=run.members[step.member],
        credits=cost,
        source=step.source,
        idempotency_key=key,
    ).decision
    assert (decision.allowed, decision.reason, decision.used, decision.limit) == expected
    assert decision.resets_at == run.period.end
    if decision.allowed:
        run.ledger[key] = (run.members[step.member].pk, cost, step.source, "credits", run.now)
        limit = run.limit_of(step.member)
        if run.counts(step.source) and limit is not None:
            assert run.counted_now(step.member) <= limit, "a consume passed the member's limit"
        allowance = run.organization.credit_allowance
        if run.organization.block_when_exhausted and allowance is not None:
            assert run.organization_used_now() <= allowance, "a consume passed the allowance"
    run.last_consume = (Consume(step.member, cost, step.source), key, decision.as_answer())


def _aimed_cost(run: Run, step: Consume) -> Decimal:
    cap, used = None, ZERO
    if step.aim == "limit":
        cap, used = run.limit_of(step.member), run.counted_now(step.member)
    elif step.aim == "allowance":
        cap, used = run.organization.credit_allowance, run.organization_used_now()
    if cap is None or cap - used + step.nudge <= 0:
        return step.cost
    return cap - used + step.nudge


def _check(run: Run, step: Check) -> None:
    allowed, reason, used, limit = _expected_decision(run, step.member, step.cost, step.source)
    if allowed:
        used = run.counted_now(step.member)  # a check reports usage as it stands
    decision = usage_check(
        organization=run.organization,
        membership=run.members[step.member],
        credits=step.cost,
        source=step.source,
    )
    assert (decision.allowed, decision.reason, decision.used, decision.limit) == (
        allowed,
        reason,
        used,
        limit,
    )


def _ingest(run: Run, step: Ingest) -> None:
    if step.repeat and run.last_batch is not None:
        result = usage_ingest(organization=run.organization, events=run.last_batch)
        assert (result.accepted, result.duplicates) == (0, len(run.last_batch))
        return
    batch = []
    for event in step.events:
        key = run.key()
        moment = run.scenario.now - event.age
        user = run.members[event.member].external_id if event.member is not None else None
        batch.append(
            UsageInput(
                idempotency_key=key,
                credits=event.cost,
                user=user,
                source=event.source,
                meter=event.meter,
                quantity=event.cost if event.meter == "tokens" else None,
                timestamp=moment,
            )
        )
        membership_id = run.members[event.member].pk if event.member is not None else None
        run.ledger[key] = (membership_id, event.cost, event.source, event.meter, moment)
    result = usage_ingest(organization=run.organization, events=batch)
    assert (result.accepted, result.duplicates) == (len(batch), 0), "ingest is never refused"
    run.last_batch = batch


def _exclude(run: Run, step: Exclude) -> None:
    limit_policy_update(organization=run.organization, excluded_sources=sorted(step.sources))
    if step.sources != run.excluded:
        run.exclusions_changed = True
    run.excluded = step.sources


def _change_anchor(run: Run, step: ChangeAnchor) -> None:
    # The oracle keeps the scenario's anchor day: the period under way, and
    # every one before it, must be the same after the change (SPEC §16).
    organization_update(organization=run.organization, anchor_day=step.anchor_day)


def _nonzero(rows: Any) -> dict[Any, Decimal]:
    totals: dict[Any, Decimal] = {}
    for key, used in rows:
        assert used >= 0, f"a negative total: {key} {used}"
        if used:
            totals[key] = used
    return totals


def _assert_totals_equal_the_ledger(run: Run) -> None:
    organization = run.organization
    rows = list(
        UsageEvent.objects.filter(organization=organization).values_list(
            "idempotency_key", "membership_id", "credits", "source", "meter", "timestamp"
        )
    )
    assert {key: (m, c, s, meter, t) for key, m, c, s, meter, t in rows} == run.ledger

    by_period: dict[datetime, Decimal] = defaultdict(Decimal)
    member_used: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    member_counted: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    by_source: dict[tuple[int, datetime, str], Decimal] = defaultdict(Decimal)
    by_day: dict[date, Decimal] = defaultdict(Decimal)
    tokens: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    for _, membership_id, credits, source, meter, moment in rows:
        start = period_containing(moment, anchor_day=run.scenario.anchor_day).start
        if meter == "tokens":  # SPEC §10: a sum meter, its quantity the event's credits
            tokens[(0, start)] += credits
            if membership_id is not None:
                tokens[(membership_id, start)] += credits
        by_period[start] += credits
        by_day[moment.astimezone(UTC).date()] += credits
        by_source[(membership_id or 0, start, source)] += credits
        if membership_id is not None:
            member_used[(membership_id, start)] += credits
            if run.counts(source):
                member_counted[(membership_id, start)] += credits

    assert _nonzero(
        OrganizationUsage.objects.filter(organization=organization).values_list(
            "period_start", "used"
        )
    ) == _nonzero(by_period.items())
    members = MemberUsage.objects.filter(organization=organization)
    assert _nonzero(
        ((m, p), used)
        for m, p, used in members.values_list("membership_id", "period_start", "used")
    ) == _nonzero(member_used.items())
    counted = _nonzero(
        ((m, p), c) for m, p, c in members.values_list("membership_id", "period_start", "counted")
    )
    expected_counted = _nonzero(member_counted.items())
    if run.exclusions_changed:
        # A change of exclusions recounts the current period only.
        current = run.period.start
        counted = {key: value for key, value in counted.items() if key[1] == current}
        expected_counted = {
            key: value for key, value in expected_counted.items() if key[1] == current
        }
    assert counted == expected_counted
    assert _nonzero(
        ((k, p, s), used)
        for k, p, s, used in SourceUsage.objects.filter(organization=organization).values_list(
            "member_key", "period_start", "source", "used"
        )
    ) == _nonzero(by_source.items())
    assert _nonzero(
        DailyUsage.objects.filter(organization=organization).values_list("day", "used")
    ) == _nonzero(by_day.items())
    assert _nonzero(
        ((k, p), value)
        for k, p, value in MeterUsage.objects.filter(organization=organization).values_list(
            "member_key", "period_start", "value"
        )
    ) == _nonzero(tokens.items())

    # Whoever has reached their limit this period has it recorded.
    for index, membership in enumerate(run.members):
        limit = run.limit_of(index)
        if limit is not None and run.counted_now(index) >= limit:
            assert MemberUsage.objects.get(
                membership=membership, period_start=run.period.start
            ).limit_reached_at, f"member {index} reached {limit} unmarked"


STEPS = {
    Consume: _consume,
    Check: _check,
    Ingest: _ingest,
    Exclude: _exclude,
    ChangeAnchor: _change_anchor,
}


@settings(
    max_examples=int(os.environ.get("GATE_MAX_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios)
def test_consumes_never_pass_a_cap_and_totals_always_equal_the_ledger(
    scenario: Scenario, db: None
) -> None:
    with time_machine.travel(scenario.now, tick=False), transaction.atomic():
        run = _start(scenario)
        for step in scenario.steps:
            STEPS[type(step)](run, step)
            _assert_totals_equal_the_ledger(run)
        transaction.set_rollback(True)
