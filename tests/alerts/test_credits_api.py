"""The credit balance over the API (SPEC §9): /credit-balance, /credit-grants,
/credit-ledger, /balance-alerts, /auto-top-up, and what §9 adds to
/alert-events, /webhook-endpoints and the consume refusal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from alerts.api import FiringKindName, WebhookEventName
from alerts.models import MAX_BALANCE_ALERTS, BalanceAlert, FiringKind
from alerts.services.changes import organization_update
from alerts.services.credit_settings import balance_alert_create
from alerts.services.credits import credit_balances_check, credit_grant_create
from alerts.webhooks import WEBHOOK_EVENT_TYPES
from billing.models import AutoTopUp, CreditGrant, CreditLedgerEntry
from billing.services.grants import GrantInput
from tests.factories import AdminMembershipFactory
from tests.helpers import assert_error, clock_held_at, ingest, post_consume

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2030, 3, 10, 12, tzinfo=UTC)
frozen_time = clock_held_at(NOW)

BALANCE = "/api/v1/credit-balance"
GRANTS = "/api/v1/credit-grants"
LEDGER = "/api/v1/credit-ledger"
ALERTS = "/api/v1/balance-alerts"
TOP_UP = "/api/v1/auto-top-up"
EVENTS = "/api/v1/alert-events"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def allowance(organization):
    """Acme with 10 credits a period."""
    organization_update(organization=organization, credit_allowance=D(10))
    organization.refresh_from_db()
    return organization


def grant_body(credits: Any = 5, key: str = "grant-1", **fields: Any) -> dict[str, Any]:
    return {"kind": "purchased", "credits": credits, "idempotency_key": key, **fields}


def make_grant(organization, credits: Any = 5, key: str = "seed", **fields: Any) -> CreditGrant:
    """A grant made by the service, as the admin or another test's setup would."""
    grant = GrantInput(kind="promotional", credits=D(credits), idempotency_key=key, **fields)
    return credit_grant_create(organization=organization, grant=grant).grant


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["data"]]


class TestCreditBalance:
    def test_no_allowance_and_no_grant_is_no_balance(self, api, organization):
        body = api.get(BALANCE).json()

        assert body == {
            "balance": None,
            "allowance": None,
            "allowance_remaining": None,
            "grants_remaining": "0",
            "overage": "0",
            "period_start": "2030-03-01T00:00:00Z",
            "period_end": "2030-04-01T00:00:00Z",
            "grants": [],
        }

    def test_allowance_left_plus_active_grants_in_drawdown_order(self, api, allowance, member):
        later = make_grant(allowance, "2.5", key="later", priority=60)
        first = make_grant(allowance, 3, key="first", priority=10)
        make_grant(allowance, 7, key="pending", effective_at=NOW + timedelta(days=1))
        ingest(allowance, 4, user=member)

        body = api.get(BALANCE).json()

        assert body["balance"] == "11.5"  # 6 left of 10, and 3 + 2.5
        assert body["allowance"] == "10"
        assert body["allowance_remaining"] == "6"
        assert body["grants_remaining"] == "5.5"
        assert body["overage"] == "0"
        assert [grant["id"] for grant in body["grants"]] == [first.pk, later.pk]
        assert body["grants"][0] == api.get(f"{GRANTS}/{first.pk}").json()

    def test_what_nothing_covers_is_overage_and_the_balance_is_zero(self, api, allowance, member):
        make_grant(allowance, 5)
        ingest(allowance, 18, user=member)

        body = api.get(BALANCE).json()

        assert (body["balance"], body["allowance_remaining"], body["overage"]) == ("0", "0", "3")
        assert body["grants"] == []


class TestGrantCreate:
    def test_201_with_the_grant_and_its_ledger_entry(self, api, organization):
        response = api.post(GRANTS, grant_body("12.5", note="Q1 purchase"))

        assert response.status_code == 201, response.content
        body = response.json()
        assert body == {
            "id": body["id"],
            "kind": "purchased",
            "credits": "12.5",
            "remaining": "12.5",
            "priority": 50,
            "effective_at": iso(NOW),
            "expires_at": None,
            "note": "Q1 purchase",
            "status": "active",
            "created_at": iso(NOW),
        }
        entry = CreditLedgerEntry.objects.get()
        assert (entry.grant_id, entry.type, entry.credits) == (body["id"], "grant", D("12.5"))
        assert api.get(BALANCE).json()["balance"] == "12.5"

    def test_times_without_an_offset_are_utc(self, api, organization):
        body = api.post(
            GRANTS,
            grant_body(
                effective_at="2030-04-01T00:00:00",
                expires_at="2030-05-01T02:00:00+02:00",
                priority=1,
                kind="adjustment",
            ),
        ).json()

        assert body["effective_at"] == "2030-04-01T00:00:00Z"
        assert body["expires_at"] == "2030-05-01T00:00:00Z"
        assert (body["status"], body["priority"], body["kind"]) == ("pending", 1, "adjustment")

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"kind": None}, "kind"),
            ({"kind": "gift"}, "kind"),
            ({"credits": 0}, "credits"),
            ({"credits": -5}, "credits"),
            ({"credits": "lots"}, "credits"),
            ({"credits": "1.0000001"}, "credits"),
            ({"priority": 0}, "priority"),
            ({"priority": 101}, "priority"),
            ({"priority": "5"}, "priority"),
            ({"priority": True}, "priority"),
            ({"idempotency_key": None}, "idempotency_key"),
            ({"idempotency_key": ""}, "idempotency_key"),
            ({"idempotency_key": "k" * 256}, "idempotency_key"),
            ({"note": "n" * 501}, "note"),
            ({"effective_at": "yesterday"}, "effective_at"),
            ({"effective_at": "0001-01-01T00:00:00+01:00"}, "effective_at"),
            ({"expires_at": "9999-12-31T23:59:59"}, "expires_at"),
            ({"expires_at": iso(NOW - timedelta(seconds=1))}, "expires_at"),
            (
                {"effective_at": iso(NOW + timedelta(days=2)), "expires_at": iso(NOW)},
                "expires_at",
            ),
            ({"colour": "red"}, "colour"),
        ],
    )
    def test_bad_grants_are_422_naming_the_field_and_store_nothing(
        self, api, organization, change, field
    ):
        body = {
            key: value for key, value in {**grant_body(), **change}.items() if value is not None
        }

        assert_error(api.post(GRANTS, body), 422, field=field)
        assert not CreditGrant.objects.exists()
        assert not CreditLedgerEntry.objects.exists()

    def test_a_repeat_with_the_same_key_and_body_is_200_with_the_first_grant(
        self, api, organization
    ):
        first = api.post(GRANTS, grant_body(7, expires_at="2030-06-01T00:00:00Z"))
        again = api.post(GRANTS, grant_body(7, expires_at="2030-06-01T00:00:00Z"))

        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        assert CreditGrant.objects.count() == 1
        assert CreditLedgerEntry.objects.count() == 1
        assert api.get(BALANCE).json()["balance"] == "7"

    def test_a_repeat_later_without_effective_at_is_still_the_same_body(self, api, organization):
        first = api.post(GRANTS, grant_body(7))

        with time_machine.travel(NOW + timedelta(hours=3), tick=False):
            again = api.post(GRANTS, grant_body(7))

        assert again.status_code == 200, again.content
        assert again.json()["id"] == first.json()["id"]

    @pytest.mark.parametrize(
        "change", [{"credits": 8}, {"priority": 49}, {"note": "other"}, {"kind": "promotional"}]
    )
    def test_the_same_key_with_another_body_is_409(self, api, organization, change):
        first = api.post(GRANTS, grant_body(7))

        response = api.post(GRANTS, {**grant_body(7), **change})

        assert_error(response, 409, "idempotency_key_reused")
        assert list(CreditGrant.objects.values_list("pk", "credits")) == [
            (first.json()["id"], D(7))
        ]
        assert CreditLedgerEntry.objects.count() == 1

    def test_keys_are_per_organization(self, api, outsider_api, organization, other_organization):
        assert api.post(GRANTS, grant_body(7)).status_code == 201
        assert outsider_api.post(GRANTS, grant_body(9)).status_code == 201
        assert outsider_api.get(BALANCE).json()["balance"] == "9"


class TestGrantDetailAndVoid:
    def test_unknown_and_another_organizations_grants_are_404(
        self, api, organization, other_organization
    ):
        theirs = make_grant(other_organization, 5)

        for grant_id in (theirs.pk, theirs.pk + 1000):
            assert_error(api.get(f"{GRANTS}/{grant_id}"), 404)
            assert_error(api.post(f"{GRANTS}/{grant_id}/void"), 404)
        theirs.refresh_from_db()
        assert (theirs.remaining, theirs.voided_at) == (D(5), None)

    def test_void_takes_what_is_left_and_voiding_twice_changes_nothing(
        self, api, allowance, member
    ):
        grant = make_grant(allowance, 5)
        ingest(allowance, 12, user=member)  # 10 from the allowance, 2 from the grant

        voided = api.post(f"{GRANTS}/{grant.pk}/void")
        again = api.post(f"{GRANTS}/{grant.pk}/void")

        assert voided.status_code == 200, voided.content
        assert voided.json()["status"] == "voided"
        assert voided.json()["remaining"] == "0"
        assert voided.json()["credits"] == "5"
        assert again.status_code == 200
        assert again.json() == voided.json() == api.get(f"{GRANTS}/{grant.pk}").json()
        types = list(CreditLedgerEntry.objects.order_by("id").values_list("type", "credits"))
        assert types == [("grant", D(5)), ("drawdown", D(-2)), ("void", D(-3))]
        assert api.get(BALANCE).json()["balance"] == "0"


class TestGrantList:
    def test_newest_first_in_pages(self, api, organization):
        made = [make_grant(organization, n, key=f"k{n}").pk for n in range(1, 6)]

        first = api.get(f"{GRANTS}?limit=2")
        cursor = first.json()["next_cursor"]
        second = api.get(f"{GRANTS}?limit=2&cursor={cursor}")
        third = api.get(f"{GRANTS}?limit=2&cursor={second.json()['next_cursor']}")

        assert ids(first) + ids(second) + ids(third) == made[::-1]
        assert third.json()["next_cursor"] is None
        assert_error(api.get(f"{GRANTS}?cursor=nonsense"), 400, "invalid_cursor")
        assert_error(api.get(f"{GRANTS}?limit=201"), 400, field="limit")

    def test_the_status_filter_agrees_with_each_grants_status(self, api, organization, member):
        made = {
            "expired": make_grant(
                organization,
                1,
                key="expired",
                effective_at=NOW - timedelta(days=2),
                expires_at=NOW - timedelta(days=1),
            ),
            "depleted": make_grant(organization, 2, key="depleted", priority=1),
            "active": make_grant(organization, 3, key="active", priority=2),
            "pending": make_grant(
                organization, 4, key="pending", effective_at=NOW + timedelta(days=1)
            ),
            "voided": make_grant(organization, 5, key="voided"),
        }
        ingest(organization, 2, user=member)
        api.post(f"{GRANTS}/{made['voided'].pk}/void")
        credit_balances_check(now=NOW)  # writes the expiry: `remaining` 0, still `expired`
        assert made["expired"].entries.filter(type="expiry").exists()

        every = {item["id"]: item["status"] for item in api.get(GRANTS).json()["data"]}
        assert every == {grant.pk: status for status, grant in made.items()}
        for status, grant in made.items():
            assert ids(api.get(f"{GRANTS}?status={status}")) == [grant.pk], status
        assert_error(api.get(f"{GRANTS}?status=spent"), 400, field="status")


class TestLedger:
    def test_newest_first_signed_and_summing_to_each_grants_remaining(self, api, allowance, member):
        grant = make_grant(allowance, 5)
        ingest(allowance, 13, user=member)
        api.post(f"{GRANTS}/{grant.pk}/void")

        response = api.get(LEDGER)

        entries = response.json()["data"]
        assert [(e["type"], e["credits"], e["grant_id"]) for e in entries] == [
            ("void", "-2", grant.pk),
            ("drawdown", "-3", grant.pk),
            ("grant", "5", grant.pk),
        ]
        assert entries[0]["at"] == iso(NOW)
        assert sum(D(e["credits"]) for e in entries) == D(0)  # its remaining
        first = api.get(f"{LEDGER}?limit=1")
        rest = api.get(f"{LEDGER}?cursor={first.json()['next_cursor']}")
        assert ids(first) + ids(rest) == [e["id"] for e in entries]


class TestBalanceAlerts:
    def test_create_each_type(self, api, organization, owner):
        depleted = api.post(ALERTS, {"type": "depleted"})
        dropped = api.post(
            ALERTS,
            {
                "type": "dropped",
                "threshold": "2.5",
                "notify": "specific_admins",
                "admins": [owner.external_id],
            },
        )
        recovered = api.post(ALERTS, {"type": "recovered"})

        assert [r.status_code for r in (depleted, dropped, recovered)] == [201, 201, 201]
        assert dropped.json() == {
            "id": dropped.json()["id"],
            "type": "dropped",
            "threshold": "2.5",
            "notify": "specific_admins",
            "admins": [owner.external_id],
            "status": "armed",
            "triggered_at": None,
        }
        assert depleted.json()["threshold"] is None
        assert api.get(f"{ALERTS}/{dropped.json()['id']}").json() == dropped.json()
        assert ids(api.get(ALERTS)) == [r.json()["id"] for r in (depleted, dropped, recovered)]

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({}, "type", None),
            ({"type": "empty"}, "type", None),
            ({"type": "dropped"}, "threshold", "invalid_threshold"),
            ({"type": "dropped", "threshold": 0}, "threshold", None),
            ({"type": "depleted", "threshold": 5}, "threshold", "invalid_threshold"),
            ({"type": "depleted", "notify": "everyone"}, "notify", None),
            ({"type": "depleted", "notify": "specific_admins"}, "admins", "admins_required"),
            (
                {"type": "depleted", "notify": "specific_admins", "admins": ["nobody"]},
                "admins",
                "unknown_user",
            ),
            (
                {"type": "depleted", "notify": "specific_admins", "admins": ["member@acme.test"]},
                "admins",
                "not_an_admin",
            ),
            ({"type": "depleted", "colour": "red"}, "colour", None),
        ],
    )
    def test_bad_alerts_are_422_and_create_nothing(self, api, owner, member, body, field, code):
        assert_error(api.post(ALERTS, body), 422, code, field)
        assert not BalanceAlert.objects.exists()

    def test_the_11th_is_refused(self, api, organization, owner):
        for threshold in range(1, MAX_BALANCE_ALERTS + 1):
            balance_alert_create(
                organization=organization, alert_type="dropped", threshold=D(threshold)
            )

        assert_error(api.post(ALERTS, {"type": "depleted"}), 422, "too_many_alerts")
        assert BalanceAlert.objects.count() == MAX_BALANCE_ALERTS
        page = api.get(f"{ALERTS}?limit=6")
        rest = api.get(f"{ALERTS}?cursor={page.json()['next_cursor']}")
        assert len(ids(page) + ids(rest)) == MAX_BALANCE_ALERTS

    def test_the_list_costs_the_same_queries_however_many_alerts(self, api, organization, owner):
        def queries() -> int:
            with CaptureQueriesContext(connection) as captured:
                assert api.get(ALERTS).status_code == 200
            return len(captured)

        recipients = {"notify": "specific_admins", "admins": [owner]}
        balance_alert_create(organization=organization, alert_type="depleted", **recipients)
        queries()  # the key's first request of the test records its use
        one = queries()
        for threshold in (1, 2, 3):
            balance_alert_create(
                organization=organization,
                alert_type="dropped",
                threshold=D(threshold),
                **recipients,
            )

        assert queries() == one

    def test_patch_changes_what_is_sent(self, api, organization, owner):
        second = AdminMembershipFactory(organization=organization, external_id="admin-2")
        alert_id = api.post(ALERTS, {"type": "dropped", "threshold": 5}).json()["id"]
        path = f"{ALERTS}/{alert_id}"

        threshold = api.patch(path, {"threshold": "7.5"})
        admins = api.patch(path, {"notify": "specific_admins", "admins": ["admin-2"]})
        retyped = api.patch(path, {"type": "depleted"})

        assert threshold.json()["threshold"] == "7.5"
        assert admins.json()["threshold"] == "7.5"
        assert (admins.json()["notify"], admins.json()["admins"]) == (
            "specific_admins",
            [second.external_id],
        )
        assert retyped.status_code == 200, retyped.content
        assert (retyped.json()["type"], retyped.json()["threshold"]) == ("depleted", None)
        assert retyped.json()["admins"] == ["admin-2"]  # kept
        assert api.get(path).json() == retyped.json()

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"type": None}, "type"),
            ({"notify": None}, "notify"),
            ({"admins": None}, "admins"),
            ({"threshold": None}, "threshold"),  # a `dropped` alert needs one
            ({"threshold": -1}, "threshold"),
            ({"type": "recovered", "threshold": 3}, "threshold"),
            ({"admins": ["nobody"], "notify": "specific_admins"}, "admins"),
        ],
    )
    def test_bad_patches_are_422_and_change_nothing(self, api, organization, owner, body, field):
        alert_id = api.post(ALERTS, {"type": "dropped", "threshold": 5}).json()["id"]
        before = api.get(f"{ALERTS}/{alert_id}").json()

        assert_error(api.patch(f"{ALERTS}/{alert_id}", body), 422, field=field)
        assert api.get(f"{ALERTS}/{alert_id}").json() == before

    def test_delete_then_404_and_another_organizations_are_404(
        self, api, organization, other_organization
    ):
        mine = api.post(ALERTS, {"type": "depleted"}).json()["id"]
        theirs = balance_alert_create(organization=other_organization, alert_type="depleted")

        assert api.delete(f"{ALERTS}/{mine}").status_code == 204
        for alert_id in (mine, theirs.pk):
            path = f"{ALERTS}/{alert_id}"
            assert_error(api.get(path), 404)
            assert_error(api.patch(path, {"type": "recovered"}), 404)
            assert_error(api.delete(path), 404)
        assert BalanceAlert.objects.get().type == "depleted"  # theirs, untouched


class TestAlertEvents:
    def test_a_balance_firing_lists_the_alert_and_the_balance_after(self, api, allowance, member):
        depleted = api.post(ALERTS, {"type": "depleted"}).json()["id"]
        dropped = api.post(ALERTS, {"type": "dropped", "threshold": 4}).json()["id"]
        allowance.refresh_from_db()  # the API's writes made it keep a balance

        ingest(allowance, 7, user=member)  # 10 -> 3: below 4
        ingest(allowance, 3, user=member)  # 3 -> 0: depleted

        events = api.get(EVENTS).json()["data"]
        assert [(e["kind"], e["alert_id"], e["threshold"], e["value"]) for e in events] == [
            ("balance_depleted", depleted, "0", "0"),
            ("balance_dropped", dropped, "4", "3"),
        ]
        assert events[1]["user"] is None
        assert events[1]["triggered_at"] == iso(NOW)
        assert events[1]["period_start"] == "2030-03-01T00:00:00Z"
        only = api.get(f"{EVENTS}?kind=balance_dropped&alert_id={dropped}").json()["data"]
        assert [e["alert_id"] for e in only] == [dropped]

    def test_the_names_agree_with_the_models(self):
        assert set(get_args(FiringKindName)) == set(FiringKind.values)
        assert set(get_args(WebhookEventName)) == set(WEBHOOK_EVENT_TYPES)

    def test_endpoints_subscribe_to_the_credit_events(self, api, organization):
        events = [event for event in WEBHOOK_EVENT_TYPES if event.startswith("credit_")]

        response = api.post(
            "/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/hook", "events": events}
        )

        assert response.status_code == 201, response.content
        assert response.json()["events"] == events
        assert len(events) == 6


class TestAutoTopUp:
    DEFAULT = {
        "enabled": False,
        "threshold": None,
        "credits": None,
        "priority": 50,
        "expires_after_days": None,
        "max_per_period": 3,
    }

    def test_off_until_set_and_a_put_keeps_what_it_leaves_out(self, api, organization):
        assert api.get(TOP_UP).json() == self.DEFAULT

        turned_on = api.put(TOP_UP, {"enabled": True, "threshold": 5, "credits": "20.5"})
        repriced = api.put(TOP_UP, {"priority": 10, "expires_after_days": 30})

        assert turned_on.status_code == 200, turned_on.content
        expected = {**self.DEFAULT, "enabled": True, "threshold": "5", "credits": "20.5"}
        assert turned_on.json() == expected
        expected |= {"priority": 10, "expires_after_days": 30}
        assert repriced.json() == expected == api.get(TOP_UP).json()
        never = api.put(TOP_UP, {"expires_after_days": None})
        assert never.json()["expires_after_days"] is None

    def test_a_put_takes_back_what_the_get_answers(self, api, organization):
        api.put(TOP_UP, {"enabled": True, "threshold": 5, "credits": 20, "max_per_period": 2})
        answered = api.get(TOP_UP).json()

        response = api.put(TOP_UP, answered)

        assert response.status_code == 200, response.content
        assert response.json() == answered == api.get(TOP_UP).json()

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"enabled": True}, "threshold"),
            ({"enabled": True, "threshold": 5}, "credits"),
            ({"enabled": None}, "enabled"),
            ({"enabled": "yes"}, "enabled"),
            ({"threshold": 0}, "threshold"),
            ({"priority": 0}, "priority"),
            ({"priority": None}, "priority"),
            ({"expires_after_days": 0}, "expires_after_days"),
            ({"expires_after_days": 10**9}, "expires_after_days"),
            ({"max_per_period": 0}, "max_per_period"),
            ({"max_per_period": 1.5}, "max_per_period"),
            ({"paused": True}, "paused"),
        ],
    )
    def test_bad_settings_are_422_and_store_nothing(self, api, organization, body, field):
        assert_error(api.put(TOP_UP, body), 422, field=field)
        assert not AutoTopUp.objects.exists()
        assert api.get(TOP_UP).json() == self.DEFAULT

    def test_a_write_below_the_threshold_makes_a_top_up_grant(self, api, allowance, member):
        api.put(TOP_UP, {"enabled": True, "threshold": 5, "credits": 20, "priority": 7})
        allowance.refresh_from_db()  # the API's write made it keep a balance

        ingest(allowance, 6, user=member)  # 10 -> 4

        [grant] = api.get(f"{GRANTS}?status=active").json()["data"]
        assert (grant["kind"], grant["credits"], grant["priority"]) == ("top_up", "20", 7)
        assert api.get(BALANCE).json()["balance"] == "24"


class TestConsumeRefusal:
    @pytest.mark.parametrize(("used", "balance"), [(15, "0"), (12, "3")])
    def test_the_organizations_refusal_gives_its_balance(
        self, api, allowance, member, used, balance
    ):
        make_grant(allowance, 5)
        ingest(allowance, used, user=member)

        response = post_consume(api, member, 4, key="over")

        assert response.status_code == 402, response.content
        body = response.json()
        assert body["reason"] == "organization_credits_exhausted"
        assert (body["used"], body["balance"]) == (str(used), balance)
        assert body["limit"] == str(used + int(balance)) == "15"


class TestOpenApi:
    OPERATIONS = {
        ("get", "/api/v1/credit-balance"),
        ("get", "/api/v1/credit-grants"),
        ("post", "/api/v1/credit-grants"),
        ("get", "/api/v1/credit-grants/{id}"),
        ("post", "/api/v1/credit-grants/{id}/void"),
        ("get", "/api/v1/credit-ledger"),
        ("get", "/api/v1/balance-alerts"),
        ("post", "/api/v1/balance-alerts"),
        ("get", "/api/v1/balance-alerts/{id}"),
        ("patch", "/api/v1/balance-alerts/{id}"),
        ("delete", "/api/v1/balance-alerts/{id}"),
        ("get", "/api/v1/auto-top-up"),
        ("put", "/api/v1/auto-top-up"),
    }

    def test_the_document_lists_every_credit_operation(self, db):
        document = Client().get("/api/v1/openapi.json").json()

        credits = {
            (method, path)
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if "credits" in operation.get("tags", [])
        }
        assert credits == self.OPERATIONS
        create = document["paths"]["/api/v1/credit-grants"]["post"]
        assert {"200", "201", "409", "422"} <= set(create["responses"])
        assert "same body" in create["description"]
        refused = document["components"]["schemas"]["RefusedOut"]["properties"]
        assert "balance" in refused
