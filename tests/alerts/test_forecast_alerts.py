"""Forecast alerts (SPEC §15): `threshold_type` `forecast`, a percentage of
the allowance that usage is on pace to reach by the period's end. Fired at
a write, once per period, never before 3 days or 10 % of the period have
passed, with `projected` and `projected_at`; the email says when the
allowance runs out at this pace.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.forecast import forecast
from alerts.models import Firing, Notification, OrganizationAlert, WebhookEndpoint
from alerts.services.configuration import alert_create, alert_update
from billing.models import Meter
from billing.periods import Period
from config.errors import InvalidInput
from tests.helpers import ingest

pytestmark = pytest.mark.django_db

D = Decimal
START = datetime(2026, 3, 1, tzinfo=UTC)  # a period of 31 days: Mar 1 to Apr 1
ALLOWANCE = D(3100)  # 100 credits a day


@pytest.fixture
def organization(organization, owner):
    organization.credit_allowance = ALLOWANCE
    organization.save()
    return organization


def at(days: float):
    return time_machine.travel(START + timedelta(days=days), tick=False)


def forecast_alert(organization, threshold=90, **options) -> OrganizationAlert:
    return alert_create(
        organization=organization,
        threshold_type="forecast",
        threshold=D(threshold),
        **options,
    )


class TestPace:
    def test_projected_is_usage_over_time_elapsed_times_the_period(self):
        period = Period(START, datetime(2026, 4, 1, tzinfo=UTC))
        pace = forecast(period, START + timedelta(days=3), D(300))
        assert pace is not None
        assert pace.projected == D(3100)
        assert pace.reached_at(D(2790)) == START + timedelta(days=27.9)
        assert pace.reached_at(D(3100)) == period.end

    def test_exact_to_the_sixth_fractional_digit(self):
        period = Period(START, datetime(2026, 4, 1, tzinfo=UTC))
        used = D("987654321987654321.123457")  # x 31 / 7, exactly (floats would not be)
        pace = forecast(period, START + timedelta(days=7), used)
        exact = Fraction(used) * 31 / 7
        assert pace is not None
        assert pace.projected == D(math.floor(exact * 10**6 + Fraction(1, 2))).scaleb(-6)

    def test_not_before_3_days_or_a_tenth_of_the_period(self):
        month = Period(START, datetime(2026, 4, 1, tzinfo=UTC))
        assert forecast(month, START + timedelta(days=2.99), D(300)) is None
        assert forecast(month, START + timedelta(days=3), D(300)) is not None
        short = Period(START, START + timedelta(days=10))  # a transition period
        assert forecast(short, START + timedelta(days=0.99), D(300)) is None
        assert forecast(short, START + timedelta(days=1), D(300)) is not None


class TestFiring:
    def test_fires_once_the_pace_reaches_the_threshold(self, organization):
        with at(1):
            alert = forecast_alert(organization)
            ingest(organization, 300)  # on pace for 9,300, but too early to say
        assert not Firing.objects.exists()
        with at(3):
            ingest(organization, 1)  # 301 in 3 days: 3,110.33 at the period's end
        firing = Firing.objects.get()
        assert (firing.alert, firing.threshold, firing.threshold_credits) == (alert, 90, 2790)
        assert firing.value == 301
        assert firing.projected == D("3110.333333")
        expected_at = START + timedelta(days=3) * (2790 / 301)
        assert abs(firing.projected_at - expected_at) < timedelta(milliseconds=1)

    def test_not_while_the_pace_is_below(self, organization):
        forecast_alert(organization)
        with at(10):
            ingest(organization, 800)  # 2,480 at the period's end: below 2,790
        assert not Firing.objects.exists()

    def test_once_per_period_and_later_writes_pay_nothing_for_it(self, organization):
        forecast_alert(organization)
        with at(3):
            ingest(organization, 300)
        with at(4), CaptureQueriesContext(connection) as queries:
            ingest(organization, 100)
        assert Firing.objects.count() == 1
        assert not [q for q in queries.captured_queries if "alerts_firing" in q["sql"]]
        with at(31 + 5):  # the next period
            ingest(organization, 1000)
        assert Firing.objects.count() == 2

    def test_without_an_allowance_it_never_fires(self, organization):
        organization.credit_allowance = None
        organization.save()
        forecast_alert(organization)
        with at(5):
            ingest(organization, 10**6)
        assert not Firing.objects.exists()

    def test_a_new_alert_already_on_pace_fires_at_once_unless_told_to_wait(self, organization):
        with at(5):
            ingest(organization, 1000)
            forecast_alert(organization, 80)
            waiting = forecast_alert(organization, 85, fire_if_already_exceeded=False)
        assert [f.threshold for f in Firing.objects.all()] == [80]
        assert waiting.quiet_period_start == START

    def test_editing_the_threshold_re_arms_it(self, organization):
        alert = forecast_alert(organization)
        with at(5):
            ingest(organization, 1000)
            alert_update(alert=alert, threshold=D(95))
        assert [f.threshold for f in Firing.objects.order_by("id")] == [90, 95]

    def test_a_forecast_is_on_credits_and_a_percent(self, organization):
        storage = Meter.objects.create(key="storage", name="Storage", unit="GB", aggregation="sum")
        with pytest.raises(InvalidInput):
            forecast_alert(organization, 150)
        with pytest.raises(InvalidInput):
            forecast_alert(organization, meter=storage)
        assert not OrganizationAlert.objects.exists()


class TestMessages:
    def test_the_email_says_when_the_allowance_runs_out(self, organization, deliver):
        forecast_alert(organization)
        with at(3):
            deliver(ingest, organization, 400)  # 4,133.33 at the end: runs out on day 23.25
        (email,) = mail.outbox
        assert "on pace to pass 90% of the credit allowance" in email.subject
        assert "projected at the period's end: 4,133.333333 credits" in email.body
        assert (
            "At this pace, usage reaches the threshold on Mar 21, 2026 and the allowance "
            "runs out on Mar 24, 2026." in email.body
        ), email.body

    def test_the_webhook_and_alert_events_carry_the_projection(self, organization, api):
        WebhookEndpoint.objects.create(
            organization=organization,
            url="https://hooks.example.com/x",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            events=["alert.triggered"],
        )
        forecast_alert(organization)
        with at(3):
            ingest(organization, 300)
        data = Notification.objects.get(channel="webhook").payload["data"]
        assert (data["threshold_type"], data["projected"]) == ("forecast", "3100")
        assert data["projected_at"] == "2026-03-28T21:36:00Z"
        (event,) = api.get("/api/v1/alert-events").json()["data"]
        assert (event["threshold_type"], event["projected"]) == ("forecast", "3100")
        assert event["projected_at"].startswith("2026-03-28T21:36:00")

    def test_the_api_creates_one(self, organization, api):
        response = api.post("/api/v1/alerts", {"threshold_type": "forecast", "threshold": 90})
        assert response.status_code == 201, response.content
        assert response.json()["threshold_type"] == "forecast"
        response = api.post("/api/v1/alerts", {"threshold_type": "forecast", "threshold": 101})
        assert response.status_code == 422


def test_the_page_names_a_forecast_as_one(organization, owner):
    from tests.fixtures import logged_in

    alert = forecast_alert(organization)
    client = logged_in(owner)
    with at(3):
        ingest(organization, 300)
        dialog = client.get(f"/settings/limits/alerts/{alert.pk}/delete/").content.decode()
        page = client.get("/settings/limits/").content.decode()
    assert "a forecast of 90% of the allowance" in dialog
    assert "projected usage reaching 2,790 credits" in page
    assert '90% <span class="muted">(2,790)</span>' in page  # the history
