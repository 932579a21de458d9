"""Holds in the gate's state machine (SPEC §3, §9, §13), with time.

An organization with a limits policy (a default limit, a member with a custom
one or unlimited, excluded sources), an allowance or none, blocking or not,
and grants; then, in any order: consumes and holds (any member, cost down to a
millionth or aimed at a cap, any source; each checked first), settles (of open
and closed holds, for 0, less, as much or more than held), releases, repeats
of any earlier consume or hold, ingests, the clock moving (a second to days,
to a hold's expiry and across the period's end), the beat's sweep and the
periodic balance check. A model keeps every hold as SPEC §13 defines it and
predicts every answer: allowed or refused with the right reason and figures
(a check's the same, recording nothing), 409 `hold_closed` once something
else closed a hold (expiry by time included, whether or not anything has
written it yet), the first answer to a repeat. After every step:

- each hold's stored status is the model's, and the `held` totals of every
  member and organization row are what the holds the model still has marked
  held hold: right after a gate write (consume, hold), which expires the due
  ones first, exactly the open holds; before one, due holds may be in them;
- an allowed consume or hold never takes counted + held past the member's
  limit, nor (blocking) used + held past the allowance or held past the balance;
- every usage total equals the ledger's sum; every grant's `remaining` is what
  drawdown in order leaves, and its ledger entries sum to it.

Broken on purpose, it fails: the member's guard without `t.held` (a consume
allowed past a hold), the check counting due holds, a consume that does not
expire them first. `HOLD_MAX_EXAMPLES` runs more examples. Every example runs
in a transaction rolled back at its end.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import transaction
from django.db.models import Model, Sum
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
from alerts.services.credits import credit_balances_check, credit_grant_create
from alerts.services.holds import hold_create, hold_release, hold_settle, holds_expire
from alerts.services.ingest import UsageInput, usage_ingest
from billing.balance import credit_balance_get, usage_check
from billing.models import (
    CreditGrant,
    CreditHold,
    CustomLimit,
    DailyUsage,
    HoldStatus,
    MemberUsage,
    OrganizationUsage,
    SourceUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.periods import period_containing
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED, USER_LIMIT_REACHED, Decision
from billing.services.grants import GrantInput
from config.errors import Conflict
from tests.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

D = Decimal
ZERO = D(0)
MILLIONTH = D("0.000001")
ANCHOR_DAY = 10
PERIOD_END = datetime(2026, 6, ANCHOR_DAY, tzinfo=UTC)
FOREVER = datetime.max.replace(tzinfo=UTC)
SOURCES = ("assistant", "workflow", "agent_external")
EXCLUDABLE = ("agent_external", "workflow")
UNLIMITED = "unlimited"
HELD, SETTLED, RELEASED, EXPIRED = (s.value for s in HoldStatus)

costs = st.one_of(
    st.integers(min_value=1, max_value=15).map(D),
    st.decimals(min_value=MILLIONTH, max_value=D(12), places=6),
    st.decimals(min_value=MILLIONTH, max_value=D("0.001"), places=6),
)
limits = st.one_of(
    st.integers(min_value=1, max_value=30).map(D),
    st.decimals(min_value=MILLIONTH, max_value=D(30), places=6),
)
members = st.integers(min_value=0, max_value=1)  # 0: the default limit; 1: a custom one
sources = st.sampled_from(SOURCES)
indexes = st.integers(min_value=0, max_value=50)  # of an earlier hold or request
# Aim at a cap: cost = what is left of the member's limit or of the balance
# (less what holds hold), nudged by a millionth either way, or as drawn.
aims = st.sampled_from([None, None, "limit", "balance"])
nudges = st.sampled_from([-MILLIONTH, ZERO, MILLIONTH])
settle_credits = st.one_of(st.sampled_from(["held", "previous", "zero", "double"]), costs)
SECOND = timedelta(seconds=1)
time_steps = st.sampled_from(
    [
        *(SECOND, 60 * SECOND, 600 * SECOND, timedelta(hours=1), timedelta(days=2)),
        *("expiry", "expiry", "before expiry", "period end", "before period end"),
    ]
)


@dataclass(frozen=True)
class Write:
    """A consume or a hold: who, how much (aimed at a cap, or as drawn), from where."""

    member: int
    cost: Decimal
    source: str
    aim: str | None
    nudge: Decimal


writes = st.builds(Write, member=members, cost=costs, source=sources, aim=aims, nudge=nudges)


@dataclass
class ModelHold:
    pk: int
    key: str
    member: int
    credits: Decimal
    source: str
    counted: bool
    period_start: datetime
    expires_at: datetime
    status: str = HELD  # as stored: EXPIRED once something has written the expiry
    settled_credits: Decimal | None = None

    def status_at(self, now: datetime) -> str:
        """SPEC §13: from `expires_at` on it is expired, written or not."""
        return EXPIRED if self.status == HELD and self.expires_at <= now else self.status


@dataclass
class ModelGrant:
    pk: int
    remaining: Decimal
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    seq: int

    def active(self, now: datetime) -> bool:
        return (
            self.remaining > 0
            and self.effective_at <= now
            and (self.expires_at is None or self.expires_at > now)
        )

    def order(self) -> tuple[object, ...]:
        return (self.priority, self.expires_at or FOREVER, self.seq)


def _figures(decision: Decision) -> tuple[Any, ...]:
    return (decision.allowed, decision.reason, decision.used, decision.limit, decision.balance)


def _granted(body: dict[str, Any]) -> tuple[Any, ...]:
    """A granted hold's answer, as figures."""
    limit = None if body["limit"] is None else D(body["limit"])
    return (body["allowed"], None, D(body["used"]), limit, None)


def _nonzero(rows: Any) -> dict[Any, Decimal]:
    totals: dict[Any, Decimal] = {}
    for key, value in rows:
        assert value >= 0, f"a negative total: {key} {value}"
        if value:
            totals[key] = value
    return totals


def _stored(model: type[Model], organization: Any, *fields: str) -> dict[Any, Decimal]:
    """A total table's non-zero rows: (key fields, or the one) -> the last field."""
    rows = model._default_manager.filter(organization=organization).values_list(*fields)
    return _nonzero((row[0] if len(row) == 2 else row[:-1], row[-1]) for row in rows)


class HoldMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.now = PERIOD_END - timedelta(days=10)
        self.clock = time_machine.travel(self.now, tick=False)
        self.clock.start()
        self.holds: list[ModelHold] = []
        self.grants: list[ModelGrant] = []
        self.ledger: dict[str, tuple[int | None, Decimal, str, datetime]] = {}
        self.used: dict[datetime, Decimal] = defaultdict(Decimal)
        self.requests: list[tuple[Any, dict[str, Any], Any]] = []  # (service, kwargs, answer)
        self.keys_used: list[str] = []

    @initialize(
        before_the_end=st.sampled_from([timedelta(days=10), timedelta(hours=2), 60 * SECOND]),
        allowance=st.one_of(st.none(), st.integers(min_value=1, max_value=40).map(D)),
        blocks=st.sampled_from([True, True, False]),
        default_limit=st.one_of(st.none(), limits),
        custom_limit=st.one_of(st.just(UNLIMITED), limits),
        excluded=st.frozensets(st.sampled_from(EXCLUDABLE)),
    )
    def start(
        self,
        before_the_end: timedelta,
        allowance: Decimal | None,
        blocks: bool,
        default_limit: Decimal | None,
        custom_limit: Any,
        excluded: frozenset[str],
    ) -> None:
        self.travel(PERIOD_END - before_the_end)
        self.organization = OrganizationFactory(
            anchor_day=ANCHOR_DAY, credit_allowance=allowance, block_when_exhausted=blocks
        )
        self.members = [MembershipFactory(organization=self.organization) for _ in range(2)]
        self.limits = [default_limit, None if custom_limit == UNLIMITED else custom_limit]
        self.excluded = excluded
        UserLimitPolicy.objects.create(
            organization=self.organization,
            enabled=True,
            default_limit=default_limit,
            excluded_sources=sorted(excluded),
        )
        CustomLimit.objects.create(
            organization=self.organization, membership=self.members[1], limit=self.limits[1]
        )

    def teardown(self) -> None:
        self.clock.stop()
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def travel(self, moment: datetime) -> None:
        self.clock.stop()
        self.now = moment
        self.clock = time_machine.travel(moment, tick=False)
        self.clock.start()

    # The model

    def key(self) -> str:
        self.keys_used.append(f"k{len(self.keys_used)}")
        return self.keys_used[-1]

    @staticmethod
    def period_of(moment: datetime) -> datetime:
        return period_containing(moment, anchor_day=ANCHOR_DAY).start

    def counts(self, source: str) -> bool:
        return source not in self.excluded

    def open_holds(self, member: int | None = None) -> Decimal:
        """What the gate weighs as held now: open holds of the period under way
        (a hold stays in its own period's totals), the member's counted ones.
        """
        start = self.period_of(self.now)
        return sum(
            (
                h.credits
                for h in self.holds
                if h.status_at(self.now) == HELD
                and h.period_start == start
                and (member is None or (h.member == member and h.counted))
            ),
            ZERO,
        )

    def member_used(self, member: int) -> Decimal:
        """Counted usage this period plus what the member's counted holds hold."""
        pk, start = self.members[member].pk, self.period_of(self.now)
        counted = sum(
            (
                credits
                for m, credits, source, moment in self.ledger.values()
                if m == pk and self.counts(source) and self.period_of(moment) == start
            ),
            ZERO,
        )
        return counted + self.open_holds(member)

    def allowance_left(self) -> Decimal:
        allowance = self.organization.credit_allowance or ZERO
        return max(allowance - self.used[self.period_of(self.now)], ZERO)

    def active_grants(self) -> list[ModelGrant]:
        return sorted((g for g in self.grants if g.active(self.now)), key=ModelGrant.order)

    def balance(self) -> Decimal | None:
        if self.organization.credit_allowance is None and not self.grants:
            return None
        return self.allowance_left() + sum((g.remaining for g in self.active_grants()), ZERO)

    def expected(self, member: int, cost: Decimal, source: str) -> tuple[Any, ...]:
        """SPEC §3, §9, §13: (allowed, reason, used, limit, balance) before the write."""
        limit, used = self.limits[member], self.member_used(member)
        if self.counts(source) and limit is not None and used + cost > limit:
            return (False, USER_LIMIT_REACHED, used, limit, None)
        balance = self.balance()
        if self.organization.block_when_exhausted and balance is not None:
            free = max(balance - self.open_holds(), ZERO)
            if cost > free:
                used = self.used[self.period_of(self.now)] + self.open_holds()
                return (False, ORGANIZATION_CREDITS_EXHAUSTED, used, used + free, free)
        return (True, None, used, limit, None)

    def aimed(self, write: Write) -> Decimal:
        left = None
        if write.aim == "limit" and (limit := self.limits[write.member]) is not None:
            left = limit - self.member_used(write.member)
        elif write.aim == "balance" and (balance := self.balance()) is not None:
            left = balance - self.open_holds()
        return write.cost if left is None or left + write.nudge <= 0 else left + write.nudge

    def record(self, key: str, member: int | None, credits: Decimal, source: str) -> None:
        """Usage recorded now: the ledger, and drawdown (allowance, then grants in order)."""
        pk = None if member is None else self.members[member].pk
        self.ledger[key] = (pk, credits, source, self.now)
        beyond = credits - min(credits, self.allowance_left())
        for grant in self.active_grants():
            take = min(grant.remaining, beyond)
            grant.remaining -= take
            beyond -= take
        self.used[self.period_of(self.now)] += credits

    def expiries_written(self) -> int:
        """Something expired the organization's due holds: how many it wrote."""
        due = [h for h in self.holds if h.status == HELD and h.expires_at <= self.now]
        for hold in due:
            hold.status = EXPIRED
        return len(due)

    def gate_write(self, write: Write, expires_in: int | None = None) -> None:
        """A consume, or a hold when it `expires_in`: checked first, then
        answered as the model predicts; after it (the due holds expired first)
        the held totals are the open holds, and an allowed write stayed within
        every cap.
        """
        member, cost, source = write.member, self.aimed(write), write.source
        allowed, reason, used, limit, balance = self.expected(member, cost, source)
        check = usage_check(
            organization=self.organization,
            membership=self.members[member],
            credits=cost,
            source=source,
        )
        assert _figures(check) == (allowed, reason, used, limit, balance), "a check: the same"
        if allowed:  # the answer's usage is after the write: counted + held
            used += cost if self.counts(source) else ZERO
        kwargs = {
            "membership": self.members[member],
            "credits": cost,
            "source": source,
            "idempotency_key": self.key(),
        }
        if expires_in is None:
            service: Any = usage_consume
            answer = usage_consume(organization=self.organization, **kwargs)
            figures = _figures(answer.decision)
        else:
            service, kwargs["expires_in"] = hold_create, expires_in
            answer = hold_create(organization=self.organization, **kwargs)
            figures = _figures(answer.decision()) if not answer.allowed else _granted(answer.body)
            assert answer.status_code == (201 if allowed else 402)
        self.requests.append((service, kwargs, answer))
        self.expiries_written()
        assert figures == (allowed, reason, used, limit, balance), (cost, source)
        if allowed and expires_in is None:
            self.record(self.keys_used[-1], member, cost, source)
        elif allowed and expires_in is not None:
            expires_at = self.now + timedelta(seconds=expires_in)
            assert (D(answer.body["held"]), answer.body["expires_at"]) == (
                cost,
                expires_at.isoformat().replace("+00:00", "Z"),
            )
            key, counted, start = self.keys_used[-1], self.counts(source), self.period_of(self.now)
            self.holds.append(
                ModelHold(answer.body["id"], key, member, cost, source, counted, start, expires_at)
            )

        start = self.period_of(self.now)
        row = MemberUsage.objects.filter(membership=self.members[member], period_start=start)
        counted, held = row.values_list("counted", "held").first() or (ZERO, ZERO)
        assert held == self.open_holds(member), "held toward the limit: the open holds"
        organization_used, organization_held = OrganizationUsage.objects.filter(
            organization=self.organization, period_start=start
        ).values_list("used", "held").first() or (ZERO, ZERO)
        assert organization_held == self.open_holds(), "held by the organization: the open holds"
        balance = self.balance()
        if allowed and self.counts(source) and limit is not None:
            assert counted + held <= limit, "past the member's limit"
        if allowed and self.organization.block_when_exhausted and balance is not None:
            assert organization_held <= balance, "held past the balance"
            if self.organization.credit_balance_kept_since is None:
                allowance = self.organization.credit_allowance
                assert organization_used + organization_held <= allowance, "past the allowance"

    # The steps

    @rule(write=writes, expires_in=st.sampled_from([None, 60, 600, 3600]))
    def consume_or_hold(self, write: Write, expires_in: int | None) -> None:
        """One rule for both, three holds to a consume (the other machines
        consume): no example leaves either out.
        """
        self.gate_write(write, expires_in)

    @rule(write=writes, expires_in=st.sampled_from([None, 60, 600, 3600]), step=time_steps)
    def consume_or_hold_later(
        self, write: Write, expires_in: int | None, step: timedelta | str
    ) -> None:
        """The first write after time passed (a hold's expiry, the period's end):
        the one that must expire the due holds before it weighs anything.
        """
        self.time_passes(step)
        self.gate_write(write, expires_in)

    @precondition(lambda self: self.requests)
    @rule(index=indexes)
    def repeat(self, index: int) -> None:
        """Any earlier consume or hold, whatever became of it since: the first answer."""
        service, kwargs, first = self.requests[index % len(self.requests)]
        again = service(organization=self.organization, **kwargs)
        assert again.replayed
        if service is hold_create:
            assert (again.status_code, again.body) == (first.status_code, first.body)
        else:
            assert again.decision.as_answer() == first.decision.as_answer()

    @precondition(lambda self: self.holds)
    @rule(index=indexes, how=st.one_of(st.just("release"), settle_credits))
    def close(self, index: int, how: Any) -> None:
        """Release any hold, or settle it: for 0, as much as held, twice that,
        what it was settled for before, or any amount.
        """
        hold = self.holds[index % len(self.holds)]
        status = hold.status_at(self.now)
        if how == "release":
            if status in (HELD, RELEASED):
                released = hold_release(organization=self.organization, hold_id=hold.pk)
                assert (released.status, released.settled_credits) == (RELEASED, None)
                hold.status = RELEASED
            else:
                self.refused_as_closed(hold, hold_release)
            return
        credits = {
            "held": hold.credits,
            "previous": hold.credits if hold.settled_credits is None else hold.settled_credits,
            "zero": ZERO,
            "double": hold.credits * 2,
        }.get(how, how)
        if status == HELD or (status == SETTLED and hold.settled_credits == credits):
            settled = hold_settle(organization=self.organization, hold_id=hold.pk, credits=credits)
            assert (settled.status, settled.settled_credits) == (SETTLED, credits)
            if status == HELD and credits > 0:  # usage now, under the hold's key
                self.record(hold.key, hold.member, credits, hold.source)
            hold.status, hold.settled_credits = SETTLED, credits
        else:
            self.refused_as_closed(hold, hold_settle, credits=credits)

    def refused_as_closed(self, hold: ModelHold, close: Any, **kwargs: Any) -> None:
        """409 `hold_closed`; a hold found due is expired there, with the others due."""
        with pytest.raises(Conflict) as error:
            close(organization=self.organization, hold_id=hold.pk, **kwargs)
        assert error.value.code == "hold_closed"
        if hold.status == HELD:
            assert "expired" in error.value.message
            self.expiries_written()

    @rule(member=st.one_of(st.none(), members), cost=costs, source=sources)
    def ingest(self, member: int | None, cost: Decimal, source: str) -> None:
        key = self.key()
        user = None if member is None else self.members[member].external_id
        result = usage_ingest(
            organization=self.organization,
            events=[UsageInput(key, cost, user=user, source=source)],
        )
        assert result.accepted == 1, "ingest is never refused"
        self.record(key, member, cost, source)

    @rule(
        credits=st.integers(min_value=1, max_value=20).map(D),
        priority=st.sampled_from([1, 50]),
        starts_in=st.sampled_from([None, None, timedelta(hours=5)]),
        lasts=st.sampled_from([None, timedelta(minutes=30), timedelta(days=40)]),
    )
    def grant(
        self, credits: Decimal, priority: int, starts_in: timedelta | None, lasts: timedelta | None
    ) -> None:
        effective_at = self.now + starts_in if starts_in else self.now
        expires_at = effective_at + lasts if lasts else None
        grant = GrantInput(
            "purchased",
            credits,
            priority=priority,
            effective_at=effective_at if starts_in else None,
            expires_at=expires_at,
        )
        pk = credit_grant_create(organization=self.organization, grant=grant).grant.pk
        self.grants.append(
            ModelGrant(pk, credits, priority, effective_at, expires_at, len(self.grants))
        )

    @rule(step=time_steps)
    def time_passes(self, step: timedelta | str) -> None:
        """By a step, or to the instant a hold expires or the period ends, or a
        second before: exactness at the boundaries.
        """
        if isinstance(step, timedelta):
            return self.travel(self.now + step)
        early = SECOND if step.startswith("before") else timedelta(0)
        if step.endswith("expiry"):
            later = [h.expires_at for h in self.holds if h.expires_at > self.now]
            moment = min(later, default=self.now + timedelta(minutes=10))
        else:
            moment = period_containing(self.now, anchor_day=ANCHOR_DAY).end
        self.travel(max(moment - early, self.now))

    @precondition(
        lambda self: (
            any(h.status == HELD and h.expires_at <= self.now for h in self.holds)
            or any(g.expires_at and g.expires_at <= self.now and g.remaining for g in self.grants)
        )
    )
    @rule()
    def periodic_jobs(self) -> None:
        """The beat's sweep of due holds, and the balance check (grant expiries)."""
        due = sum(1 for h in self.holds if h.status == HELD and h.expires_at <= self.now)
        assert holds_expire() == due
        self.expiries_written()
        credit_balances_check(now=self.now)
        for grant in self.grants:  # the expiry written: `remaining` 0 for good
            if grant.expires_at is not None and grant.expires_at <= self.now:
                grant.remaining = ZERO

    # What must always hold

    @invariant()
    def holds_and_totals_are_the_models(self) -> None:
        """Each hold's stored status; the held totals are what the holds still
        marked held hold; the usage totals are the ledger's sums.
        """
        if not hasattr(self, "organization"):
            return
        organization = self.organization
        stored = CreditHold.objects.filter(organization=organization)
        assert {
            pk: (s, c) for pk, s, c in stored.values_list("pk", "status", "settled_credits")
        } == {h.pk: (h.status, h.settled_credits) for h in self.holds}
        member_held: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
        organization_held: dict[datetime, Decimal] = defaultdict(Decimal)
        for hold in self.holds:
            if hold.status == HELD:  # neither closed nor its expiry written
                organization_held[hold.period_start] += hold.credits
                if hold.counted:
                    member_held[(self.members[hold.member].pk, hold.period_start)] += hold.credits
        rows = UsageEvent.objects.filter(organization=organization).values_list(
            "idempotency_key", "membership_id", "credits", "source", "timestamp"
        )
        assert {k: (m, c, s, t) for k, m, c, s, t in rows} == self.ledger
        by_period: dict[datetime, Decimal] = defaultdict(Decimal)
        member_used: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
        member_counted: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
        by_source: dict[tuple[int, datetime, str], Decimal] = defaultdict(Decimal)
        by_day: dict[date, Decimal] = defaultdict(Decimal)
        for _, membership_id, credits, source, moment in rows:
            start = self.period_of(moment)
            by_period[start] += credits
            by_day[moment.astimezone(UTC).date()] += credits
            by_source[(membership_id or 0, start, source)] += credits
            if membership_id is not None:
                member_used[(membership_id, start)] += credits
                if self.counts(source):
                    member_counted[(membership_id, start)] += credits
        for model, fields, expected in [
            (MemberUsage, ("membership_id", "period_start", "held"), member_held),
            (OrganizationUsage, ("period_start", "held"), organization_held),
            (OrganizationUsage, ("period_start", "used"), by_period),
            (MemberUsage, ("membership_id", "period_start", "used"), member_used),
            (MemberUsage, ("membership_id", "period_start", "counted"), member_counted),
            (SourceUsage, ("member_key", "period_start", "source", "used"), by_source),
            (DailyUsage, ("day", "used"), by_day),
        ]:
            assert _stored(model, organization, *fields) == _nonzero(expected.items()), fields

    @invariant()
    def grants_hold_what_drawdown_leaves_and_their_ledger_says(self) -> None:
        if not hasattr(self, "organization"):
            return
        stored = {
            grant.pk: (grant.remaining, grant.total)
            for grant in CreditGrant.objects.filter(organization=self.organization).annotate(
                total=Sum("entries__credits")
            )
        }
        for grant in self.grants:
            remaining, total = stored[grant.pk]
            assert total == remaining >= 0, grant
            if grant.expires_at is not None and grant.expires_at <= self.now:
                assert remaining in (grant.remaining, ZERO)  # 0 once the check has run
            else:
                assert remaining == grant.remaining, (grant, remaining)
        read = credit_balance_get(organization=self.organization, now=self.now).balance
        assert read == self.balance()


def test_holds_never_pass_a_cap_and_close_once(db: None) -> None:
    run_state_machine_as_test(
        HoldMachine,
        settings=settings(
            max_examples=int(os.environ.get("HOLD_MAX_EXAMPLES", "50")),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
