"""Threshold invoicing and the period's closing invoice (SPEC §11).

When the uninvoiced part of the period's invoice total (overage x price)
reaches the billing threshold's amount, one invoice for all of it; none in
the last 24 hours of a period; at its end, a `period_end` invoice for what
is left, exactly once however many beat processes run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from itertools import pairwise

import pytest
import time_machine
from django.core import mail
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.models import Notification
from alerts.services.changes import organization_update
from alerts.services.invoicing import (
    BillingThresholdInput,
    billing_threshold_set,
    invoices_close_periods,
)
from alerts.tasks import close_invoice_periods
from billing.models import Invoice, InvoiceSchedule, OrganizationUsage
from config.settings import CELERY_BEAT_SCHEDULE
from tests.factories import MembershipFactory, OrganizationFactory
from tests.fixtures import run_at_once, run_in_threads
from tests.helpers import consume, ingest
from tests.helpers import credit_grant as grant

NOW = datetime(2026, 5, 10, 12, tzinfo=UTC)
PERIOD_START = datetime(2026, 5, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def frozen_time():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def priced(organization, price, *, allowance=None, threshold=None, currency="USD"):
    """A price set the way admins set it (so its periods are closed), and a
    billing threshold when given.
    """
    organization.credit_allowance = None if allowance is None else D(allowance)
    organization.save()
    organization_update(organization=organization, credit_price=D(price), currency=currency)
    if threshold is not None:
        billing_threshold_set(
            organization=organization,
            settings=BillingThresholdInput(enabled=True, amount=D(threshold)),
        )
    return organization


def invoices(organization, reason=None):
    rows = Invoice.objects.filter(organization=organization).order_by("covered_from", "id")
    return list(rows if reason is None else rows.filter(reason=reason))


def figures(invoice):
    return (invoice.reason, invoice.credits, invoice.amount, invoice.currency)


def assert_tiled(organization, period_start=PERIOD_START):
    """The period's invoices cover it without overlap, and its row counts them."""
    rows = invoices(organization)
    for previous, row in pairwise(rows):
        assert row.covered_from == previous.covered_through
    if rows:
        assert rows[0].covered_from == period_start
    usage = OrganizationUsage.objects.get(organization=organization, period_start=period_start)
    assert usage.invoiced == sum((row.credits for row in rows), D(0))


@pytest.mark.django_db
class TestThresholdInvoices:
    def test_one_invoice_when_the_uninvoiced_total_reaches_the_amount(
        self, organization, owner, frozen_time
    ):
        priced(organization, "0.5", allowance=100, threshold=25)
        ingest(organization, 149)  # overage 49: $24.50
        assert not invoices(organization)
        ingest(organization, 1)  # $25: reached
        (first,) = invoices(organization)
        assert figures(first) == ("threshold", D(50), D(25), "USD")
        assert (first.period_start, first.covered_from, first.covered_through) == (
            PERIOD_START,
            PERIOD_START,
            NOW,
        )
        # Counts again from there: one invoice even past several multiples.
        frozen_time.shift(timedelta(hours=1))
        ingest(organization, 49)
        assert len(invoices(organization)) == 1
        ingest(organization, 321)
        second = invoices(organization)[1]
        assert figures(second) == ("threshold", D(370), D(185), "USD")
        assert second.covered_from == first.covered_through
        assert second.covered_through == NOW + timedelta(hours=1)
        assert_tiled(organization)

    def test_consume_invoices_too_and_grants_cover_first(self, organization, owner, member):
        organization.block_when_exhausted = False
        priced(organization, 2, allowance=10, threshold=10)
        grant(organization, 20)
        consume(organization, member, 34)  # 10 allowance, 20 grant, overage 4: $8
        assert not invoices(organization)
        consume(organization, member, 1)  # overage 5: $10
        assert figures(invoices(organization)[0]) == ("threshold", D(5), D(10), "USD")

    def test_a_threshold_set_below_what_is_uninvoiced_invoices_at_the_next_write(
        self, organization, owner, member
    ):
        """Even a write that adds no overage (its grant covers it) looks."""
        organization.block_when_exhausted = False
        priced(organization, 1)
        ingest(organization, 30)
        billing_threshold_set(
            organization=organization, settings=BillingThresholdInput(enabled=True, amount=D(10))
        )
        assert not invoices(organization)  # a setting is not usage
        grant(organization, 5)
        consume(organization, member, 5)  # all drawn from the grant
        assert figures(invoices(organization)[0]) == ("threshold", D(30), D(30), "USD")

    def test_none_without_a_threshold_or_disabled(self, organization, owner):
        priced(organization, 1)
        ingest(organization, 1000)
        billing_threshold_set(
            organization=organization, settings=BillingThresholdInput(enabled=False, amount=D(1))
        )
        ingest(organization, 1000)
        assert not invoices(organization)

    def test_exact_amount_at_the_price(self, organization, owner):
        priced(organization, "0.000007", threshold="0.000001")
        ingest(organization, "0.142858")
        assert invoices(organization)[0].amount == D("0.000001000006")

    def test_a_price_change_bills_what_is_left_at_the_new_price(self, organization, owner):
        priced(organization, 1, threshold=100)
        ingest(organization, 100)
        organization_update(organization=organization, credit_price=D(2))
        ingest(organization, 50)
        assert [figures(row)[1:3] for row in invoices(organization)] == [
            (D(100), D(100)),
            (D(50), D(100)),
        ]

    def test_sends_invoice_created_and_emails_the_admins(
        self, organization, owner, member, deliver, api
    ):
        api.post(
            "/api/v1/webhook-endpoints",
            {"url": "https://hooks.example.com/h", "events": ["invoice.created"]},
        )
        priced(organization, "0.25", threshold=10, currency="EUR")
        with time_machine.travel(NOW, tick=False):
            deliver(ingest, organization, 41)
        invoice = invoices(organization)[0]
        webhook = Notification.objects.get(channel="webhook")
        assert webhook.event_type == "invoice.created"
        assert webhook.payload["data"] == {
            "organization": "acme",
            "invoice_id": invoice.pk,
            "reason": "threshold",
            "period_start": "2026-05-01T00:00:00Z",
            "covered_from": "2026-05-01T00:00:00Z",
            "covered_through": "2026-05-10T12:00:00Z",
            "credits": "41",
            "amount": "10.25",
            "currency": "EUR",
            "created_at": "2026-05-10T12:00:00Z",
        }
        (message,) = mail.outbox
        assert message.to == [owner.user.email]
        assert "Invoice for €10.25 issued" in message.subject
        for part in (message.body, message.alternatives[0][0]):
            assert "41 credits" in part
            assert "reached the billing threshold" in part
            assert "May 1, 2026 00:00 to May 10, 2026 12:00 UTC" in part
            assert "/settings/limits/" in part


@pytest.mark.django_db
class TestTheLastDay:
    def test_none_in_the_last_24_hours_the_rest_goes_to_period_end(self, organization, owner):
        with time_machine.travel(PERIOD_END - timedelta(hours=24, seconds=1), tick=False):
            priced(organization, 1, threshold=10)
            ingest(organization, 10)
        assert len(invoices(organization)) == 1
        with time_machine.travel(PERIOD_END - timedelta(hours=24), tick=False):
            ingest(organization, 30)
        with time_machine.travel(PERIOD_END - timedelta(seconds=1), tick=False):
            ingest(organization, 30)
        assert len(invoices(organization)) == 1
        with time_machine.travel(PERIOD_END + timedelta(seconds=30), tick=False):
            invoices_close_periods()
        closing = invoices(organization, "period_end")[0]
        assert figures(closing) == ("period_end", D(60), D(60), "USD")
        assert closing.covered_through == PERIOD_END
        assert_tiled(organization)


@pytest.mark.django_db
class TestPeriodEnd:
    def test_once_however_many_beat_runs(self, organization, owner, frozen_time):
        priced(organization, "1.5", allowance=10)
        ingest(organization, 14)
        invoices_close_periods()  # not due yet
        assert not invoices(organization)
        frozen_time.move_to(PERIOD_END + timedelta(seconds=5))
        assert invoices_close_periods() == 1
        assert invoices_close_periods() == 0
        (closing,) = invoices(organization)
        assert figures(closing) == ("period_end", D(4), D(6), "USD")
        assert (closing.covered_from, closing.covered_through) == (PERIOD_START, PERIOD_END)
        schedule = InvoiceSchedule.objects.get(organization=organization)
        assert (schedule.period_start, schedule.due_at) == (
            PERIOD_END,
            datetime(2026, 7, 1, tzinfo=UTC),
        )

    def test_none_when_nothing_is_left(self, organization, owner, frozen_time):
        priced(organization, 1, allowance=100, threshold=5)
        ingest(organization, 110)  # the threshold invoiced all the overage
        frozen_time.move_to(PERIOD_END + timedelta(seconds=5))
        invoices_close_periods()
        assert [row.reason for row in invoices(organization)] == ["threshold"]

    def test_none_within_the_allowance(self, organization, owner, frozen_time):
        priced(organization, 1, allowance=100)
        ingest(organization, 100)
        frozen_time.move_to(PERIOD_END + timedelta(seconds=5))
        invoices_close_periods()
        assert not invoices(organization)

    def test_none_without_a_price(self, organization, owner, frozen_time):
        priced(organization, 1)
        ingest(organization, 100)
        organization_update(organization=organization, credit_price=None, clear_price=True)
        frozen_time.move_to(PERIOD_END + timedelta(seconds=5))
        invoices_close_periods()
        assert not invoices(organization)
        assert InvoiceSchedule.objects.get(organization=organization).due_at > PERIOD_END

    def test_reads_only_the_organizations_that_are_due(
        self, organization, owner, frozen_time, django_assert_num_queries
    ):
        for index in range(5):
            priced(OrganizationFactory(slug=f"quiet-{index}"), 1)
        frozen_time.move_to(PERIOD_END - timedelta(seconds=1))
        with django_assert_num_queries(1):
            assert invoices_close_periods() == 0

    def test_the_beat_task_is_scheduled_every_minute(self):
        entry = CELERY_BEAT_SCHEDULE["close-invoice-periods"]
        assert (entry["task"], entry["schedule"]) == ("alerts.tasks.close_invoice_periods", 60.0)


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_two_beat_runs_at_once_make_one_period_end_invoice(self, organization):
        with time_machine.travel(NOW, tick=False):
            priced(organization, 1)
            ingest(organization, 7)
        with time_machine.travel(PERIOD_END + timedelta(seconds=2), tick=False):
            run_at_once(close_invoice_periods, close_invoice_periods)
            run_in_threads(4, lambda i: invoices_close_periods())
        (closing,) = invoices(organization)
        assert figures(closing) == ("period_end", D(7), D(7), "USD")

    def test_twenty_consumes_crossing_the_threshold(self, organization):
        """20 consumes of 7 credits at $1, threshold $10, no allowance: each
        invoice is for all that was uninvoiced when it was made, none
        overlaps another, and together they sum to what was used.
        """
        priced(organization, 1, threshold=10)
        members = [MembershipFactory(organization=organization) for _ in range(5)]
        results = run_in_threads(
            20, lambda i: consume(organization, members[i % 5], 7, key=f"c{i}").allowed
        )
        assert all(results)
        rows = invoices(organization)
        # 7, 14 (invoiced), 7, 14 (invoiced)...: every second write invoices 14.
        assert [row.credits for row in rows] == [D(14)] * 10
        assert_tiled(organization, period_start=rows[0].period_start)
        assert Invoice.objects.aggregate(total=Sum("amount"))["total"] == D(140)


@pytest.mark.django_db
class TestProperties:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        price=st.decimals(min_value=D("0.000001"), max_value=D(3), places=6),
        allowance=st.none() | st.integers(min_value=1, max_value=50),
        threshold=st.none() | st.decimals(min_value=D("0.000001"), max_value=D(40), places=6),
        grants=st.lists(st.integers(min_value=1, max_value=30), max_size=2),
        writes=st.lists(
            st.tuples(
                st.sampled_from(["consume", "ingest", "late"]),
                st.decimals(min_value=D("0.000001"), max_value=D(25), places=6),
                st.integers(min_value=0, max_value=60 * 24 * 30),  # minutes into the period
            ),
            min_size=1,
            max_size=12,
        ),
    )
    def test_invoices_tile_the_period_and_sum_to_the_invoice_total(
        self, price, allowance, threshold, grants, writes
    ):
        """Random usage, price, grants and threshold: the period's invoices
        (threshold and period_end) never overlap, never miss a credit, and
        sum to its overage x price, the overage recomputed from the ledger of
        writes (what neither allowance nor grants covered).
        """
        organization = OrganizationFactory(block_when_exhausted=False)
        member = MembershipFactory(organization=organization)
        with time_machine.travel(PERIOD_START, tick=False) as clock:
            priced(organization, price, allowance=allowance, threshold=threshold)
            for credits in grants:
                grant(organization, credits)
            used, grant_left = D(0), D(sum(grants))
            minutes = sorted(minute for _, _, minute in writes)
            for (kind, credits, _), minute in zip(writes, minutes, strict=True):
                clock.move_to(PERIOD_START + timedelta(minutes=minute))
                if kind == "consume":
                    assert consume(organization, member, credits).allowed
                elif kind == "ingest":
                    ingest(organization, credits, user=member)
                else:  # reported late, still in the period
                    ingest(organization, credits, at=PERIOD_START + timedelta(minutes=1))
                # The oracle: the allowance first, then the grants, the rest overage.
                covered = min(credits, max((allowance or 0) - used, D(0)))
                drawn = min(credits - covered, grant_left)
                grant_left -= drawn
                used += credits
            overage = used - min(used, D(allowance or 0)) - (D(sum(grants)) - grant_left)
            clock.move_to(PERIOD_END + timedelta(seconds=1))
            invoices_close_periods()
        rows = invoices(organization)
        assert sum((row.credits for row in rows), D(0)) == overage
        assert sum((row.amount for row in rows), D(0)) == overage * price
        assert all(row.amount == row.credits * price for row in rows)
        assert [row.reason for row in rows].count("period_end") <= 1
        assert all(row.reason == "threshold" for row in rows[:-1])
        if threshold is None:
            assert len(rows) <= 1
        assert_tiled(organization)
