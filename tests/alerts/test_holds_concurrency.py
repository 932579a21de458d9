"""Holds under concurrency (SPEC §13), with real threads, each on its own
database connection: no interleaving of holds and consumes passes a cap,
and of settle, release and expiry racing for one hold exactly one wins.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from alerts.services.consume import usage_consume
from alerts.services.holds import hold_create, hold_release, hold_settle, holds_expire
from billing.models import (
    CreditHold,
    HoldStatus,
    MemberUsage,
    OrganizationUsage,
    UsageEvent,
    UserLimitPolicy,
)
from config.errors import Conflict
from tests.factories import MembershipFactory
from tests.fixtures import run_at_once, run_in_threads
from tests.helpers import credit_grant

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


def limits(organization, default):
    UserLimitPolicy.objects.create(
        organization=organization, enabled=True, default_limit=D(default)
    )


def hold(member, credits, *, key=None, expires_in=900):
    return hold_create(
        organization=member.organization,
        membership=member,
        credits=D(credits),
        idempotency_key=key,
        expires_in=expires_in,
    )


def totals(organization):
    used, held = (
        OrganizationUsage.objects.filter(organization=organization)
        .aggregate(used=Sum("used"), held=Sum("held"))
        .values()
    )
    return used or 0, held or 0


def open_holds(organization):
    return CreditHold.objects.filter(organization=organization, status=HoldStatus.HELD).aggregate(
        total=Sum("credits")
    )["total"] or D(0)


def test_forty_concurrent_holds_never_pass_a_members_limit(organization, member):
    limits(organization, 100)
    answers = run_in_threads(40, lambda i: hold(member, 5, key=f"h{i}").status_code)
    assert answers.count(201) == 20 and answers.count(402) == 20
    assert MemberUsage.objects.get(membership=member).held == D(100)
    assert open_holds(organization) == D(100)


def test_holds_and_consumes_together_never_pass_the_organizations_allowance(organization):
    organization.credit_allowance = D(100)
    organization.save()
    members = MembershipFactory.create_batch(8, organization=organization)

    def work(i):
        member = members[i % 8]
        if i % 2:
            return hold(member, 5, key=f"h{i}").allowed
        return usage_consume(
            organization=organization, membership=member, credits=D(5), idempotency_key=f"c{i}"
        ).decision.allowed

    assert run_in_threads(40, work).count(True) == 20
    used, held = totals(organization)
    assert used + held == D(100)
    assert held == open_holds(organization)
    assert used == UsageEvent.objects.aggregate(total=Sum("credits"))["total"]


def test_forty_concurrent_holds_never_pass_the_credit_balance(organization):
    credit_grant(organization, 100)
    organization.refresh_from_db()
    members = MembershipFactory.create_batch(8, organization=organization)
    answers = run_in_threads(40, lambda i: hold(members[i % 8], 5, key=f"h{i}").allowed)
    assert answers.count(True) == 20
    assert totals(organization) == (0, D(100))


def test_concurrent_settles_of_one_hold_record_it_once(organization, member):
    answer = hold(member, 10)

    def settle(i):
        return hold_settle(organization=organization, hold_id=answer.body["id"], credits=D(7))

    settled = run_in_threads(10, settle)
    assert {(s.status, s.settled_credits) for s in settled} == {(HoldStatus.SETTLED, D(7))}
    assert UsageEvent.objects.get().credits == D(7)
    assert totals(organization) == (D(7), 0)


def _close_in_race(organization, hold_id):
    """Settle, release, the beat and a consume (which expires due holds)
    racing for one hold; what each one got.
    """

    def attempt(call):
        try:
            return call()
        except Conflict as error:
            return error.code

    member = CreditHold.objects.get(pk=hold_id).membership
    return run_at_once(
        lambda: attempt(
            lambda: hold_settle(organization=organization, hold_id=hold_id, credits=D(4)).status
        ),
        lambda: attempt(lambda: hold_release(organization=organization, hold_id=hold_id).status),
        lambda: holds_expire(),
        lambda: (
            usage_consume(
                organization=organization, membership=member, credits=D(1)
            ).decision.allowed
        ),
    )


def test_settle_release_and_expiry_racing_give_one_outcome(organization, member):
    """Ten rounds, each hold due to expire within a few milliseconds of the
    race's start, so that every one of the four closers can win some round.
    """
    outcomes = set()
    for round_number in range(10):
        answer = hold(member, 10, key=f"race{round_number}")
        CreditHold.objects.filter(pk=answer.body["id"]).update(
            expires_at=timezone.now() + timedelta(milliseconds=round_number * 3)
        )
        time.sleep(0.001 * round_number)
        settled, released, _, _ = _close_in_race(organization, answer.body["id"])
        closed = CreditHold.objects.get(pk=answer.body["id"])
        if closed.status == HoldStatus.HELD:  # nobody saw it due nor won: the beat then
            holds_expire(now=closed.expires_at)
            closed.refresh_from_db()
        outcomes.add(closed.status)
        winners = [settled == HoldStatus.SETTLED, released == HoldStatus.RELEASED]
        assert sum(winners) <= 1
        assert (settled == HoldStatus.SETTLED) == (closed.status == HoldStatus.SETTLED)
        assert (released == HoldStatus.RELEASED) == (closed.status == HoldStatus.RELEASED)
        recorded = UsageEvent.objects.filter(idempotency_key=f"race{round_number}").count()
        assert recorded == (1 if closed.status == HoldStatus.SETTLED else 0)
        assert MemberUsage.objects.get(membership=member).held == 0
        assert totals(organization)[1] == 0
    used, _ = totals(organization)
    assert used == UsageEvent.objects.aggregate(total=Sum("credits"))["total"]
    assert outcomes <= {HoldStatus.SETTLED, HoldStatus.RELEASED, HoldStatus.EXPIRED}


def test_two_beats_expire_each_hold_once(organization):
    members = MembershipFactory.create_batch(4, organization=organization)
    for index in range(20):
        hold(members[index % 4], 1, key=f"due{index}")
    CreditHold.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = run_in_threads(2, lambda i: holds_expire())
    assert sum(expired) == 20
    assert CreditHold.objects.filter(status=HoldStatus.EXPIRED).count() == 20
    assert set(MemberUsage.objects.values_list("held", flat=True)) == {0}
    assert totals(organization) == (0, 0)
