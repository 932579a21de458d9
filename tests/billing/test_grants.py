"""Credit grants and the balance (SPEC §9): drawdown order, exact expiry,
the gate on the balance, voids, idempotent creation, the ledger's sums.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db.models import Sum

from alerts.services.credits import credit_balances_check, credit_grant_create, credit_grant_void
from billing.balance import credit_balance_get, gate_decision_now
from billing.grants import _draw_one_by_one, draw
from billing.ledger import lock_organization_total
from billing.models import (
    CreditGrant,
    CreditLedgerEntry,
    GrantStatus,
    LedgerEntryType,
    OrganizationUsage,
)
from billing.periods import organization_period
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED
from billing.selectors import limit_rules_get
from billing.services.grants import GrantInput
from config.errors import Conflict, InvalidInput, NotFound
from tests.factories import MembershipFactory
from tests.fixtures import run_in_threads
from tests.helpers import clock_held_at, consume, ingest
from tests.helpers import credit_grant as grant

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
frozen_time = clock_held_at(NOW)


def remaining(*grants: CreditGrant) -> list[Decimal]:
    return [CreditGrant.objects.get(pk=g.pk).remaining for g in grants]


def balance(organization) -> Decimal | None:
    organization.refresh_from_db()
    return credit_balance_get(organization=organization, now=datetime.now(UTC)).balance


def with_allowance(organization, allowance, *, blocks=True):
    organization.credit_allowance = None if allowance is None else D(allowance)
    organization.block_when_exhausted = blocks
    organization.save()
    return organization


def assert_ledger_sums_to_remaining(organization) -> None:
    for row in CreditGrant.objects.filter(organization=organization):
        total = row.entries.aggregate(total=Sum("credits"))["total"]
        assert total == row.remaining, row


class TestDrawdownOrder:
    def test_allowance_first_then_priority_then_earliest_expiry_then_oldest(
        self, organization, member
    ):
        with_allowance(organization, 10)
        never = grant(organization, 5, priority=50)
        late = grant(organization, 5, priority=50, expires_at=NOW + timedelta(days=20))
        early = grant(organization, 5, priority=50, expires_at=NOW + timedelta(days=5))
        urgent = grant(organization, 5, priority=10, expires_at=NOW + timedelta(days=30))
        assert consume(organization, member, 10).allowed  # the allowance alone
        assert remaining(urgent, early, late, never) == [5, 5, 5, 5]
        assert consume(organization, member, 7).allowed
        assert remaining(urgent, early, late, never) == [0, 3, 5, 5]
        assert consume(organization, member, 9).allowed
        assert remaining(urgent, early, late, never) == [0, 0, 0, 4]
        assert balance(organization) == D(4)
        assert_ledger_sums_to_remaining(organization)

    def test_oldest_first_among_equals(self, organization, member):
        with_allowance(organization, None)
        older = grant(organization, 3)
        with time_machine.travel(NOW + timedelta(seconds=1), tick=False):
            newer = grant(organization, 3)
            assert consume(organization, member, 4).allowed
        assert remaining(older, newer) == [0, 2]

    def test_created_at_the_same_instant_the_first_made_is_drawn_first(self, organization, member):
        with_allowance(organization, None)
        first, second = grant(organization, 3), grant(organization, 3)
        assert consume(organization, member, 4).allowed
        assert remaining(first, second) == [0, 2]

    def test_a_drawdown_entry_covers_one_write(self, organization, member):
        with_allowance(organization, None)
        first, second = grant(organization, 2, priority=1), grant(organization, 5, priority=2)
        ingest(organization, 3, user=member)
        drawdowns = CreditLedgerEntry.objects.filter(type=LedgerEntryType.DRAWDOWN)
        assert sorted(drawdowns.values_list("grant_id", "credits")) == [
            (first.pk, D(-2)),
            (second.pk, D(-1)),
        ]

    def test_the_one_by_one_drawdown_agrees_with_the_statement(
        self, organization, other_organization
    ):
        for org in (organization, other_organization):
            grant(org, "2.5", priority=3)
            grant(org, 4, priority=1, expires_at=NOW + timedelta(days=2))
            grant(org, 1, priority=1)
        start = organization_period(organization, NOW).start
        for org in (organization, other_organization):
            lock_organization_total(organization_id=org.pk, period_start=start)
        statement = draw(
            organization_id=organization.pk,
            period_start=start,
            credits=D("5.25"),
            now=NOW,
            all_or_nothing=False,
        )
        loop = _draw_one_by_one(other_organization.pk, start, D("5.25"), NOW, False)
        assert statement == loop
        # Both count what grants covered of the period on its total row.
        assert sorted(
            OrganizationUsage.objects.filter(period_start=start).values_list("drawn", flat=True)
        ) == [D("5.25"), D("5.25")]
        assert sorted(
            CreditGrant.objects.filter(organization=organization).values_list(
                "priority", "remaining"
            )
        ) == sorted(
            CreditGrant.objects.filter(organization=other_organization).values_list(
                "priority", "remaining"
            )
        )


class TestTheGateOnTheBalance:
    def test_refused_when_the_balance_is_below_the_cost_with_balance_in_the_answer(
        self, organization, member
    ):
        with_allowance(organization, 10)
        grant(organization, 5)
        assert consume(organization, member, 12).allowed
        refusal = consume(organization, member, 4)
        assert not refusal.allowed
        assert refusal.reason == ORGANIZATION_CREDITS_EXHAUSTED
        assert refusal.balance == D(3)
        assert (refusal.used, refusal.limit) == (D(12), D(15))
        assert refusal.as_answer()["balance"] == "3"
        assert consume(organization, member, 3).allowed
        assert balance(organization) == D(0)

    def test_a_refusal_draws_nothing_and_records_nothing(self, organization, member):
        with_allowance(organization, 2)
        g = grant(organization, 3)
        assert not consume(organization, member, 6).allowed
        assert remaining(g) == [3]
        assert not CreditLedgerEntry.objects.filter(type=LedgerEntryType.DRAWDOWN).exists()
        assert credit_balance_get(organization=organization, now=NOW).balance == D(5)

    def test_no_allowance_and_never_a_grant_is_not_limited(self, organization, member):
        with_allowance(organization, None)
        assert balance(organization) is None
        assert consume(organization, member, 1000).allowed

    def test_a_grant_limits_an_organization_without_allowance(self, organization, member):
        with_allowance(organization, None)
        grant(organization, 5)
        assert consume(organization, member, 5).allowed
        assert not consume(organization, member, 1).allowed

    def test_an_organization_that_does_not_block_draws_what_there_is_the_rest_is_overage(
        self, organization, member
    ):
        with_allowance(organization, 10, blocks=False)
        g = grant(organization, 5)
        assert consume(organization, member, 20).allowed
        assert remaining(g) == [0]
        figures = credit_balance_get(organization=organization, now=NOW)
        assert (figures.balance, figures.overage) == (D(0), D(5))

    def test_ingest_is_never_refused_and_draws_only_the_current_period(self, organization, member):
        with_allowance(organization, 10)
        g = grant(organization, 5)
        ingest(organization, 3, user=member, at=NOW - timedelta(days=20))  # last period
        assert remaining(g) == [5]
        ingest(organization, 12, user=member)
        assert remaining(g) == [3]
        ingest(organization, 10, user=member)
        figures = credit_balance_get(organization=organization, now=NOW)
        assert (figures.balance, figures.grants_remaining, figures.overage) == (D(0), D(0), D(7))

    def test_a_later_grant_does_not_cover_past_overage(self, organization, member):
        with_allowance(organization, 10, blocks=False)
        consume(organization, member, 15)
        g = grant(organization, 5)
        assert remaining(g) == [5]
        assert credit_balance_get(organization=organization, now=NOW).overage == D(5)


class TestExpiry:
    def test_exact_at_expires_at_whatever_the_job_has_done(self, organization, member):
        with_allowance(organization, None)
        g = grant(organization, 5, expires_at=NOW + timedelta(hours=1))
        with time_machine.travel(NOW + timedelta(hours=1) - timedelta(microseconds=1), tick=False):
            assert balance(organization) == D(5)
        with time_machine.travel(NOW + timedelta(hours=1), tick=False):
            assert balance(organization) == D(0)
            assert not consume(organization, member, 1).allowed
            assert g.status_at(datetime.now(UTC)) == GrantStatus.EXPIRED

    def test_a_refusal_is_explained_at_the_consumes_own_moment(self, organization, member):
        """The database's refusal is explained by the rule at the moment the
        consume was decided, not a microsecond later, when a grant may have
        started or stopped counting.
        """
        with_allowance(organization, None)
        grant(organization, 5, expires_at=NOW + timedelta(hours=1))
        period = credit_balance_get(organization=organization, now=NOW).period
        rules = limit_rules_get(organization=organization, membership_ids=[member.pk])
        with time_machine.travel(NOW + timedelta(hours=2), tick=False):
            decision = gate_decision_now(
                organization=organization,
                membership=member,
                credits=D(6),
                source="assistant",
                period=period,
                rules=rules,
                now=NOW,
            )
        assert decision.balance == D(5)

    def test_the_job_writes_the_expiry_once_even_run_twice(self, organization):
        g = grant(organization, 5, expires_at=NOW + timedelta(hours=1))
        later = NOW + timedelta(hours=1, seconds=30)
        with time_machine.travel(later, tick=False):
            credit_balances_check(now=later)
            credit_balances_check(now=later)
        expiries = CreditLedgerEntry.objects.filter(type=LedgerEntryType.EXPIRY)
        assert list(expiries.values_list("grant_id", "credits")) == [(g.pk, D(-5))]
        assert remaining(g) == [0]
        assert_ledger_sums_to_remaining(organization)

    def test_a_pending_grant_counts_from_effective_at(self, organization, member):
        with_allowance(organization, None)
        grant(organization, 5, effective_at=NOW + timedelta(hours=2))
        assert balance(organization) == D(0)
        assert not consume(organization, member, 1).allowed
        with time_machine.travel(NOW + timedelta(hours=2), tick=False):
            assert consume(organization, member, 1).allowed


class TestVoid:
    def test_void_sets_remaining_to_zero_at_once_and_twice_changes_nothing(self, organization):
        g = grant(organization, 5)
        voided = credit_grant_void(organization=organization, grant_id=g.pk)
        assert (voided.remaining, voided.status) == (D(0), GrantStatus.VOIDED)
        credit_grant_void(organization=organization, grant_id=g.pk)
        voids = CreditLedgerEntry.objects.filter(type=LedgerEntryType.VOID)
        assert list(voids.values_list("credits", flat=True)) == [D(-5)]
        assert_ledger_sums_to_remaining(organization)

    def test_another_organizations_grant_is_not_found(self, organization, other_organization):
        g = grant(other_organization, 5)
        with pytest.raises(NotFound):
            credit_grant_void(organization=organization, grant_id=g.pk)
        assert remaining(g) == [5]


class TestCreation:
    def test_a_repeated_key_gets_the_first_grant_another_body_409(self, organization):
        first = credit_grant_create(
            organization=organization, grant=GrantInput("purchased", D(5), idempotency_key="k")
        )
        again = credit_grant_create(
            organization=organization, grant=GrantInput("purchased", D(5), idempotency_key="k")
        )
        assert (again.grant.pk, again.replayed, first.replayed) == (first.grant.pk, True, False)
        with pytest.raises(Conflict):
            credit_grant_create(
                organization=organization, grant=GrantInput("purchased", D(6), idempotency_key="k")
            )
        assert CreditGrant.objects.count() == 1
        assert CreditLedgerEntry.objects.count() == 1

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"kind": "gift"}, "kind"),
            ({"credits": D(0)}, "credits"),
            ({"priority": 0}, "priority"),
            ({"priority": 101}, "priority"),
            ({"expires_at": NOW}, "expires_at"),
        ],
    )
    def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
        self, organization, fields, field
    ):
        values = {"kind": "purchased", "credits": D(5)} | fields
        with pytest.raises(InvalidInput) as refused:
            credit_grant_create(organization=organization, grant=GrantInput(**values))
        assert refused.value.field == field
        assert not CreditGrant.objects.exists()
        organization.refresh_from_db()
        assert organization.credit_balance_kept_since is None


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_forty_consumes_never_pass_the_balance_nor_overdraw_a_grant(self, organization):
        with_allowance(organization, 30)
        first = grant(organization, "12.5", priority=1)
        second = grant(organization, "7.5", priority=2, expires_at=NOW + timedelta(days=3))
        members = MembershipFactory.create_batch(8, organization=organization)
        results = run_in_threads(
            40, lambda i: consume(organization, members[i % 8], D("1.25"), key=f"c{i}").allowed
        )
        assert results.count(True) * D("1.25") == D(50)  # 30 + 12.5 + 7.5: the balance exactly
        assert remaining(first, second) == [0, 0]
        assert balance(organization) == D(0)
        assert_ledger_sums_to_remaining(organization)

    def test_consumes_ingests_grants_and_voids_at_once_lose_no_credit(self, organization):
        with_allowance(organization, 10)
        g = grant(organization, 20)
        members = MembershipFactory.create_batch(4, organization=organization)

        def work(i: int):
            if i % 5 == 0:
                return grant(organization, 2).pk
            if i % 7 == 0:
                return credit_grant_void(organization=organization, grant_id=g.pk).pk
            if i % 2:
                return ingest(organization, 1, user=members[i % 4], key=f"i{i}").accepted
            return consume(organization, members[i % 4], 1, key=f"c{i}").allowed

        run_in_threads(30, work)
        assert_ledger_sums_to_remaining(organization)
        assert all(r >= 0 for r in CreditGrant.objects.values_list("remaining", flat=True))

    def test_two_periodic_checks_and_consumes_at_once_write_each_expiry_once(self, organization):
        with_allowance(organization, None)
        expiring = [grant(organization, 3, expires_at=NOW + timedelta(hours=1)) for _ in range(3)]
        lasting = grant(organization, 10)
        members = MembershipFactory.create_batch(4, organization=organization)
        later = NOW + timedelta(hours=1)
        with time_machine.travel(later, tick=False):
            run_in_threads(
                10,
                lambda i: (
                    credit_balances_check(now=later)
                    if i < 2
                    else consume(organization, members[i % 4], 1, key=f"c{i}").allowed
                ),
            )
        expiries = CreditLedgerEntry.objects.filter(type=LedgerEntryType.EXPIRY)
        assert sorted(expiries.values_list("grant_id", "credits")) == [
            (g.pk, D(-3)) for g in expiring
        ]
        assert remaining(*expiring, lasting) == [0, 0, 0, 2]  # 8 consumes, all from the lasting
        assert_ledger_sums_to_remaining(organization)
