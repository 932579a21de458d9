"""Alerts on meters (SPEC §10): through /api/v1/alerts with `meter`,
absolute in the meter's unit, at most 25 per meter, fired by the same rules
as alerts on credits, with `meter` in the alert, its firings and webhooks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core import mail

from alerts.models import Firing, Notification, OrganizationAlert, WebhookEndpoint
from alerts.services.configuration import alert_create
from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import Meter
from config.errors import InvalidInput
from tests.factories import MembershipFactory
from tests.fixtures import run_in_threads

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALERTS = "/api/v1/alerts"


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def storage(db) -> Meter:
    return Meter.objects.create(key="storage", name="Storage", unit="GB", aggregation="sum")


@pytest.fixture
def seats(db) -> Meter:
    return Meter.objects.create(key="seats", name="Seats", unit="seats", aggregation="max")


_keys = iter(range(10**9))


def use(organization, meter_key: str, quantity=None, *, credits=None, user=None, **props):
    return usage_ingest(
        organization=organization,
        events=[
            UsageInput(
                idempotency_key=f"k{next(_keys)}",
                credits=None if credits is None else D(str(credits)),
                user=user.external_id if user else None,
                meter=meter_key,
                quantity=None if quantity is None else D(str(quantity)),
                properties=props,
            )
        ],
    )


class TestApi:
    def test_an_alert_on_a_meter_is_created_and_read_with_its_meter(self, api, storage):
        response = api.post(
            ALERTS, {"meter": "storage", "threshold_type": "absolute", "threshold": "100.5"}
        )
        assert response.status_code == 201, response.content
        assert response.json()["meter"] == "storage"
        assert api.get(ALERTS).json()["data"][0]["meter"] == "storage"
        assert OrganizationAlert.objects.get().meter == storage

    def test_the_meter_defaults_to_credits(self, api):
        response = api.post(ALERTS, {"threshold_type": "absolute", "threshold": 10})
        assert response.json()["meter"] == "credits"
        assert OrganizationAlert.objects.get().meter is None

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"meter": "nope", "threshold_type": "absolute", "threshold": 1}, "meter", None),
            ({"meter": "storage", "threshold_type": "percentage", "threshold": 50}, None, None),
        ],
    )
    def test_bad_alerts_are_refused_and_nothing_stored(self, api, storage, body, field, code):
        response = api.post(ALERTS, body)
        assert response.status_code == 422, response.content
        assert response.json()["error"]["field"] == (field or "threshold_type")
        assert not OrganizationAlert.objects.exists()

    def test_a_meter_alert_cannot_be_edited_into_a_percentage(self, api, storage):
        alert_id = api.post(
            ALERTS, {"meter": "storage", "threshold_type": "absolute", "threshold": 5}
        ).json()["id"]
        response = api.patch(f"{ALERTS}/{alert_id}", {"threshold_type": "percentage"})
        assert response.status_code == 422
        assert OrganizationAlert.objects.get().threshold_type == "absolute"

    def test_at_most_25_per_meter(self, api, organization, storage, seats):
        for n in range(25):
            alert_create(organization=organization, threshold_type="absolute", threshold=n + 1)
            alert_create(
                organization=organization, threshold_type="absolute", threshold=n + 1, meter=storage
            )
        response = api.post(
            ALERTS, {"meter": "storage", "threshold_type": "absolute", "threshold": 99}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "too_many_alerts"
        with pytest.raises(InvalidInput):
            alert_create(organization=organization, threshold_type="absolute", threshold=99)
        alert_create(organization=organization, threshold_type="absolute", threshold=1, meter=seats)
        assert OrganizationAlert.objects.count() == 51


class TestFiring:
    def test_fires_once_per_period_when_the_meters_value_crosses(
        self, organization, owner, storage, deliver
    ):
        alert_create(
            organization=organization, threshold_type="absolute", threshold=100, meter=storage
        )
        deliver(use, organization, "storage", "99.999999")
        assert not Firing.objects.exists()
        deliver(use, organization, "storage", "0.000001")  # exactly 100: reached
        deliver(use, organization, "storage", 500)
        firing = Firing.objects.get()
        assert (firing.meter, firing.threshold, firing.value) == ("storage", 100, 100)
        (message,) = mail.outbox
        assert "Storage reached 100 GB this billing period" in message.subject + message.body
        assert "Usage when it fired: 100 GB" in message.body

    def test_credits_do_not_fire_a_meter_alert_nor_a_meter_a_credits_alert(
        self, organization, owner, storage
    ):
        alert_create(
            organization=organization, threshold_type="absolute", threshold=10, meter=storage
        )
        alert_create(organization=organization, threshold_type="absolute", threshold=10)
        usage_ingest(organization=organization, events=[UsageInput("c", D(50))])
        use(organization, "storage", 5, credits=0)
        (firing,) = Firing.objects.all()
        assert firing.meter == "credits"

    def test_a_max_meter_fires_when_its_largest_quantity_reaches_the_threshold(
        self, organization, owner, seats
    ):
        alert_create(
            organization=organization, threshold_type="absolute", threshold=10, meter=seats
        )
        use(organization, "seats", 9)
        use(organization, "seats", 9)
        assert not Firing.objects.exists()
        use(organization, "seats", 12)
        use(organization, "seats", 15)
        assert Firing.objects.get().value == 12

    def test_a_unique_count_meter_fires_on_its_distinct_values(self, organization, owner):
        users = Meter.objects.create(
            key="active_users",
            name="Active users",
            unit="users",
            aggregation="unique_count",
            property="user_id",
        )
        alert_create(organization=organization, threshold_type="absolute", threshold=2, meter=users)
        use(organization, "active_users", user_id="a")
        use(organization, "active_users", user_id="a")
        assert not Firing.objects.exists()
        use(organization, "active_users", user_id="b")
        assert Firing.objects.get().value == 2

    def test_created_already_past_it_fires_at_once_unless_told_to_wait(
        self, organization, owner, storage
    ):
        use(organization, "storage", 30)
        alert_create(
            organization=organization,
            threshold_type="absolute",
            threshold=20,
            meter=storage,
            fire_if_already_exceeded=False,
        )
        assert not Firing.objects.exists()
        alert_create(
            organization=organization, threshold_type="absolute", threshold=25, meter=storage
        )
        assert Firing.objects.get().threshold == 25

    def test_the_meter_is_in_alert_events_and_the_webhook(self, api, organization, owner, storage):
        WebhookEndpoint.objects.create(
            organization=organization,
            url="https://hooks.example.com/x",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            events=["alert.triggered"],
        )
        alert_create(
            organization=organization, threshold_type="absolute", threshold=1, meter=storage
        )
        use(organization, "storage", 2)
        (event,) = api.get("/api/v1/alert-events").json()["data"]
        assert (event["meter"], event["threshold"], event["value"]) == ("storage", "1", "2")
        webhook = Notification.objects.get(channel="webhook")
        assert webhook.payload["data"]["meter"] == "storage"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_writes_crossing_a_meter_alert_fire_it_once(organization, owner):
    storage = Meter.objects.create(key="storage", name="Storage", unit="GB", aggregation="sum")
    alert_create(organization=organization, threshold_type="absolute", threshold=10, meter=storage)
    members = MembershipFactory.create_batch(5, organization=organization)
    run_in_threads(20, lambda i: use(organization, "storage", 1, user=members[i % 5]))
    firing = Firing.objects.get(meter="storage")
    assert firing.value == 10
