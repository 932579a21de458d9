"""`/api/v1/billing-threshold` and `/api/v1/invoices` (SPEC §11)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
import time_machine

from accounts.models import AuditEvent
from billing.models import BillingThreshold, Invoice
from tests.helpers import assert_error, ingest

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 5, 10, 12, tzinfo=UTC)


class TestBillingThreshold:
    def test_none_yet_reads_disabled(self, api):
        assert api.get("/api/v1/billing-threshold").json() == {"enabled": False, "amount": None}

    def test_put_then_get(self, api, organization):
        response = api.put("/api/v1/billing-threshold", {"enabled": True, "amount": "250.5"})
        assert response.status_code == 200
        assert response.json() == {"enabled": True, "amount": "250.5"}
        assert api.get("/api/v1/billing-threshold").json() == response.json()
        # A partial PUT keeps the rest, and accepts what GET answers.
        assert api.put("/api/v1/billing-threshold", {"enabled": False}).json() == {
            "enabled": False,
            "amount": "250.5",
        }
        assert api.put("/api/v1/billing-threshold", {"enabled": False, "amount": None}).json() == {
            "enabled": False,
            "amount": None,
        }
        assert AuditEvent.objects.filter(action="billing_threshold.updated").count() == 3

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"enabled": True}, "amount"),
            ({"enabled": True, "amount": 0}, "amount"),
            ({"enabled": True, "amount": "-5"}, "amount"),
            ({"enabled": True, "amount": "1.0000001"}, "amount"),
            ({"enabled": "yes", "amount": 5}, "enabled"),
            ({"enabled": None}, "enabled"),
            ({"amount": 5, "currency": "USD"}, "currency"),
        ],
    )
    def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(self, api, body, field):
        response = api.put("/api/v1/billing-threshold", body)
        assert_error(response, 422, field=field)
        assert not BillingThreshold.objects.exists()


def make_invoice(organization, credits, **fields):
    defaults = {
        "reason": "threshold",
        "period_start": datetime(2026, 5, 1, tzinfo=UTC),
        "covered_from": datetime(2026, 5, 1, tzinfo=UTC),
        "covered_through": datetime(2026, 5, 2, tzinfo=UTC),
        "amount": D(credits) / 2,
        "currency": "USD",
    }
    return Invoice.objects.create(
        organization=organization, credits=D(credits), **fields | defaults
    )


class TestInvoices:
    def test_an_invoice_made_by_usage_as_the_api_gives_it(self, api, organization):
        organization.credit_price = D("0.000123")
        organization.currency = "EUR"
        organization.save()
        api.put("/api/v1/billing-threshold", {"enabled": True, "amount": "0.01"})
        with time_machine.travel(NOW, tick=False):
            ingest(organization, "81.300813")  # 0.009999999999: short of 0.01
            assert not api.get("/api/v1/invoices").json()["data"]
            ingest(organization, "0.000001")
        (invoice,) = api.get("/api/v1/invoices").json()["data"]
        assert invoice == {
            "id": invoice["id"],
            "reason": "threshold",
            "period_start": "2026-05-01T00:00:00Z",
            "covered_from": "2026-05-01T00:00:00Z",
            "covered_through": "2026-05-10T12:00:00Z",
            "credits": "81.300814",
            "amount": "0.010000000122",
            "currency": "EUR",
            "created_at": "2026-05-10T12:00:00Z",
        }
        assert api.get(f"/api/v1/invoices/{invoice['id']}").json() == invoice

    def test_paginated_newest_first(self, api, organization):
        made = [make_invoice(organization, index + 1) for index in range(5)]
        first = api.get("/api/v1/invoices?limit=2").json()
        assert [row["id"] for row in first["data"]] == [made[4].pk, made[3].pk]
        rest = api.get(f"/api/v1/invoices?limit=5&cursor={first['next_cursor']}").json()
        assert [row["id"] for row in rest["data"]] == [made[2].pk, made[1].pk, made[0].pk]
        assert rest["next_cursor"] is None

    def test_another_organizations_invoice_is_a_404(self, api, other_organization):
        theirs = make_invoice(other_organization, 3)
        assert_error(api.get(f"/api/v1/invoices/{theirs.pk}"), 404, code="invoice_not_found")
        assert api.get("/api/v1/invoices").json()["data"] == []

    def test_invoice_created_is_an_event_endpoints_subscribe_to(self, api):
        response = api.post(
            "/api/v1/webhook-endpoints",
            {"url": "https://hooks.example.com/h", "events": ["invoice.created"]},
        )
        assert response.status_code == 201
        assert response.json()["events"] == ["invoice.created"]

    def test_documented(self, api):
        document = api.get("/api/v1/openapi.json").json()
        for path in ("/api/v1/billing-threshold", "/api/v1/invoices", "/api/v1/invoices/{id}"):
            assert path in document["paths"]
