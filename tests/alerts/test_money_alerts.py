"""`spend` and `invoice_total` organization alerts (SPEC §11): spend is usage
x price, the invoice total overage x price; each fires once per period when
it reaches its threshold, never without a price, in the write's transaction
(consume and ingest) and on a change of configuration (an alert made or
edited, the price set or changed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
import time_machine
from django.core import mail

from alerts.models import Firing
from alerts.selectors import alert_status
from alerts.services.changes import organization_update
from alerts.services.configuration import alert_create, alert_update
from billing.selectors import current_period
from tests.accounts.test_admin import change_url, organization_form
from tests.helpers import assert_error, consume, ingest
from tests.helpers import credit_grant as grant

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 5, 10, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def priced(organization, price, *, allowance=None, currency="USD"):
    organization.credit_price = D(price)
    organization.currency = currency
    organization.credit_allowance = None if allowance is None else D(allowance)
    organization.save()
    return organization


def money_alert(organization, threshold_type, threshold, **fields):
    return alert_create(
        organization=organization,
        threshold_type=threshold_type,
        threshold=D(threshold),
        **fields,
    )


def firing_figures(firing):
    return (firing.threshold, firing.threshold_credits, firing.value, firing.currency)


class TestSpend:
    def test_fires_once_per_period_when_spend_reaches_the_threshold(
        self, organization, owner, member, deliver, frozen_time
    ):
        priced(organization, "0.25")
        alert = money_alert(organization, "spend", 50)
        deliver(ingest, organization, "199.996")  # $49.999
        deliver(consume, organization, member, "0.004")  # exactly $50: reached
        firing = Firing.objects.get()
        assert firing_figures(firing) == (D(50), D(50), D(50), "USD")
        assert firing.threshold_type == "spend"
        deliver(consume, organization, member, 400)
        assert Firing.objects.count() == 1
        assert alert_status(alert, period=current_period(organization))[0] == "in_alarm"
        # The next period counts again.
        frozen_time.move_to(datetime(2026, 6, 2, tzinfo=UTC))
        deliver(ingest, organization, 199)
        assert Firing.objects.count() == 1
        deliver(ingest, organization, 1)
        assert Firing.objects.count() == 2

    def test_never_fires_without_a_price(self, organization, owner, deliver):
        money_alert(organization, "spend", 1)
        deliver(ingest, organization, 10_000)
        assert not Firing.objects.exists()

    def test_fires_at_once_when_the_price_set_puts_spend_past_it(
        self, organization, owner, deliver
    ):
        money_alert(organization, "spend", 50)
        deliver(ingest, organization, 1000)
        assert not Firing.objects.exists()
        deliver(organization_update, organization=organization, credit_price=D("0.05"))
        assert firing_figures(Firing.objects.get()) == (D(50), D(50), D(50), "USD")

    def test_fires_on_a_price_change_when_already_past(self, organization, owner, deliver, api):
        priced(organization, "0.01")
        money_alert(organization, "spend", 50)
        deliver(ingest, organization, 1000)  # $10
        assert not Firing.objects.exists()
        response = api.patch("/api/v1/organization", {"credit_price": "0.1"})
        assert response.status_code == 200
        assert Firing.objects.get().value == D(100)

    def test_fires_when_staff_set_the_price_in_the_django_admin(
        self, organization, owner, staff_client, django_capture_on_commit_callbacks
    ):
        money_alert(organization, "spend", 50)
        ingest(organization, 1000)
        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                change_url(organization), organization_form(organization, own_credit_price="0.05")
            )
        assert response.status_code == 302
        assert Firing.objects.get().value == D(50)
        assert "Spend this period reached $50.00" in mail.outbox[0].subject

    def test_a_new_currency_is_evaluated_and_said(self, organization, owner, deliver):
        priced(organization, 1)
        money_alert(organization, "spend", 5)
        deliver(ingest, organization, 4)
        deliver(organization_update, organization=organization, currency="EUR")
        deliver(ingest, organization, 1)
        assert Firing.objects.get().currency == "EUR"
        assert "€5.00" in mail.outbox[-1].subject

    def test_edit_re_arms_it(self, organization, owner, deliver):
        priced(organization, 1)
        alert = money_alert(organization, "spend", 10)
        deliver(ingest, organization, 30)
        assert Firing.objects.count() == 1
        alert_update(alert=alert, threshold=D(20))  # already past: fires at once
        assert Firing.objects.count() == 2
        alert_update(alert=alert, threshold=D(40))
        assert Firing.objects.count() == 2
        deliver(ingest, organization, 10)
        assert Firing.objects.count() == 3

    def test_not_fired_when_created_not_to_while_past(self, organization, owner, deliver):
        priced(organization, 1)
        deliver(ingest, organization, 30)
        money_alert(organization, "spend", 10, fire_if_already_exceeded=False)
        deliver(ingest, organization, 30)
        assert not Firing.objects.exists()

    def test_a_new_alert_already_passed_fires_at_once(self, organization, owner, deliver):
        priced(organization, 1)
        deliver(ingest, organization, 30)
        money_alert(organization, "spend", 10)
        assert Firing.objects.get().value == D(30)


class TestInvoiceTotal:
    def test_spend_counts_all_usage_and_invoice_total_only_the_overage(
        self, organization, owner, member, deliver
    ):
        """Allowance 100 and a grant of 50 at $1: spend passes $120 at 120
        credits; the invoice total is $0 until 150 and passes $20 at 170.
        """
        priced(organization, 1, allowance=100)
        grant(organization, 50)
        money_alert(organization, "spend", 120)
        money_alert(organization, "invoice_total", 20)
        deliver(consume, organization, member, 140)
        (spend,) = Firing.objects.all()
        assert (spend.threshold_type, spend.value) == ("spend", D(140))
        deliver(ingest, organization, 29, user=member)  # overage 19
        assert Firing.objects.count() == 1
        deliver(ingest, organization, 1, user=member)  # overage 20: reached
        invoice_total = Firing.objects.get(threshold_type="invoice_total")
        assert firing_figures(invoice_total) == (D(20), D(20), D(20), "USD")

    def test_never_fires_without_a_price(self, organization, owner, deliver):
        money_alert(organization, "invoice_total", 1)
        deliver(ingest, organization, 500)
        assert not Firing.objects.exists()

    def test_late_usage_of_a_past_period_is_overage_of_that_period(
        self, organization, owner, deliver, frozen_time
    ):
        """Late usage draws no grant: all of it beyond its period's allowance
        is that period's overage, and fires that period's alert.
        """
        priced(organization, 2, allowance=10)
        money_alert(organization, "invoice_total", 10)
        deliver(ingest, organization, 8)
        frozen_time.move_to(datetime(2026, 6, 2, tzinfo=UTC))
        grant(organization, 1000)
        deliver(ingest, organization, 7, at=datetime(2026, 5, 30, tzinfo=UTC))  # overage 5
        firing = Firing.objects.get()
        assert (firing.value, firing.period_start) == (D(10), datetime(2026, 5, 1, tzinfo=UTC))

    def test_exact_amounts_with_twelve_fractional_digits(self, organization, owner, deliver):
        priced(organization, "0.000003")
        money_alert(organization, "invoice_total", "0.000001")
        deliver(ingest, organization, "0.333334")
        assert Firing.objects.get().value == D("0.000001000002")


class TestMessages:
    def test_email_and_webhook_say_the_amount_with_the_currency(
        self, organization, owner, deliver, api
    ):
        priced(organization, "0.5")
        api.post(
            "/api/v1/webhook-endpoints",
            {"url": "https://hooks.example.com/h", "events": ["alert.triggered"]},
        )
        money_alert(organization, "spend", 50)
        deliver(ingest, organization, "100.5")
        (message,) = mail.outbox
        assert "Spend this period reached $50.00" in message.subject
        for part in (message.body, message.alternatives[0][0]):
            assert "Spend this period reached $50.00" in part
            assert "Spend when it fired: $50.25" in part.replace("</td><td>", ": ").replace(
                '<tr><td style="color:#6b7280;padding-right:16px;">', ""
            )
            assert "credits" not in part.split("Billing period")[0].split("reached")[1]
        from alerts.models import Notification

        webhook = Notification.objects.get(channel="webhook")
        data = webhook.payload["data"]
        assert (data["threshold"], data["value"], data["currency"], data["threshold_type"]) == (
            "50",
            "50.25",
            "USD",
            "spend",
        )

    def test_invoice_total_email(self, organization, owner, deliver):
        priced(organization, 2, currency="EUR")
        money_alert(organization, "invoice_total", 10)
        deliver(ingest, organization, 6)
        (message,) = mail.outbox
        assert "Invoice total this period reached €10.00" in message.body
        assert "€12.00" in message.body


class TestApi:
    def test_create_and_list(self, api, organization):
        priced(organization, 1, currency="EUR")
        response = api.post(
            "/api/v1/alerts", {"threshold_type": "spend", "threshold": "1500.123456"}
        )
        assert response.status_code == 201, response.json()
        body = response.json()
        assert (body["threshold_type"], body["threshold"], body["currency"]) == (
            "spend",
            "1500.123456",
            "EUR",
        )
        percentage = api.post("/api/v1/alerts", {"threshold_type": "percentage", "threshold": 50})
        assert percentage.json()["currency"] is None
        patched = api.patch(f"/api/v1/alerts/{body['id']}", {"threshold_type": "invoice_total"})
        assert patched.json()["threshold_type"] == "invoice_total"

    @pytest.mark.parametrize("threshold", ["0", "-1", "1.0000001", "abc"])
    def test_a_bad_threshold_is_a_422_naming_it(self, api, organization, threshold):
        response = api.post("/api/v1/alerts", {"threshold_type": "spend", "threshold": threshold})
        assert_error(response, 422, field="threshold")
        assert not organization.alerts.exists()

    def test_alert_events_give_the_amounts_and_currency(self, api, organization, owner):
        priced(organization, "0.001")
        money_alert(organization, "invoice_total", "0.5")
        ingest(organization, "500.5")
        (event,) = api.get("/api/v1/alert-events").json()["data"]
        assert (event["threshold"], event["threshold_credits"], event["value"]) == (
            "0.5",
            "0.5",
            "0.5005",
        )
        assert event["currency"] == "USD"


class TestCost:
    def test_no_statement_more_without_a_price_and_one_with(
        self, api, member, organization, django_assert_num_queries
    ):
        body = {"user": member.external_id, "credits": 1, "idempotency_key": "warm"}
        assert api.post("/api/v1/consume", body).status_code == 200
        with django_assert_num_queries(11):  # as tests/billing/test_api.py pins it
            api.post("/api/v1/consume", body | {"idempotency_key": "unpriced"})
        priced(organization, 1)
        with django_assert_num_queries(12):
            api.post("/api/v1/consume", body | {"idempotency_key": "priced"})
