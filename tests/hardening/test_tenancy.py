"""Tenancy and roles over every API operation and every page.

Acme (owner: admin, member) and Globex (outsider: its admin, its own key).
Each caller gets exactly what it may: the API's operations answer another
organization's key as if Acme's objects did not exist, never leak them and
never change them; pages give members a 403, other organizations' admins a
404 on Acme's objects, anonymous visitors the log-in page. Never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import ApiKey, Membership
from accounts.services import api_key_create, api_key_revoke
from alerts.models import (
    BalanceAlert,
    LimitRequest,
    OrganizationAlert,
    UserAlertPolicy,
    WebhookEndpoint,
)
from alerts.services.changes import custom_limit_set
from alerts.services.credit_settings import AutoTopUpInput, auto_top_up_set, balance_alert_create
from alerts.services.credits import credit_grant_create
from alerts.services.holds import hold_create
from alerts.services.invoicing import BillingThresholdInput, billing_threshold_set
from alerts.services.limit_requests import limit_request_create
from alerts.webhooks import webhook_endpoint_create
from billing.models import (
    AutoTopUp,
    BillingThreshold,
    CreditGrant,
    CreditHold,
    CreditLedgerEntry,
    CustomLimit,
    Invoice,
    MemberUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.selectors import current_period
from billing.services.grants import GrantInput
from config.api import api as ninja_api
from tests.factories import MeterFactory, meter_usage_row
from tests.fixtures import ApiClient, logged_in
from tests.helpers import absolute_alert, ingest, limits_on

pytestmark = pytest.mark.django_db

D = Decimal
ACME_MARKERS = ("member@acme.test", "owner@acme.test", '"acme"', "Acme Inc")


@pytest.fixture
def world(organization, owner, member, outsider, other_organization) -> dict[str, Any]:
    limits_on(organization, 100)
    custom_limit_set(organization=organization, membership=member, limit=D(50))
    alert = absolute_alert(organization, 10)
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="http://127.0.0.1:9/hook", events=["alert.triggered"]
    )
    ingest(organization, 60, user=member, key="seed")
    # The credit balance's objects (SPEC §9): a grant whose note, and an alert
    # whose admins, would show Acme's markers if they leaked.
    grant = credit_grant_create(
        organization=organization,
        grant=GrantInput(kind="purchased", credits=D(1000), note="Acme Inc", idempotency_key="g"),
    ).grant
    balance_alert = balance_alert_create(
        organization=organization,
        alert_type="dropped",
        threshold=D(5),
        notify="specific_admins",
        admins=[owner],
    )
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(enabled=True, threshold=D(2), credits=D(50)),
    )
    # A meter (SPEC §10) with a value of Acme's member: Globex's summary must not name them.
    storage = MeterFactory(key="storage_gb", name="Storage", unit="GB", aggregation="max")
    period_start = current_period(organization).start
    meter_usage_row(storage, organization, 5, period_start=period_start)
    meter_usage_row(storage, organization, 5, period_start=period_start, membership=member)
    absolute_alert(other_organization, 10)
    credit_grant_create(
        organization=other_organization,
        grant=GrantInput(kind="purchased", credits=D(7), idempotency_key="globex-g"),
    )
    # An invoice and a billing threshold (SPEC §11).
    invoice = Invoice.objects.create(
        organization=organization,
        reason="threshold",
        period_start=datetime(2026, 5, 1, tzinfo=UTC),
        covered_from=datetime(2026, 5, 1, tzinfo=UTC),
        covered_through=datetime(2026, 5, 2, tzinfo=UTC),
        credits=D(5),
        amount=D("2.5"),
        currency="USD",
    )
    billing_threshold_set(
        organization=organization, settings=BillingThresholdInput(enabled=True, amount=D(50))
    )
    # A limit request (SPEC §14) whose reason would show Acme's markers.
    limit_request = limit_request_create(
        organization=organization, membership=owner, credits=D(5), reason="Acme Inc"
    )
    # Two holds (SPEC §13): one to settle, one to release.
    hold, other_hold = (
        hold_create(
            organization=organization, membership=owner, credits=D(2), idempotency_key=key
        ).hold(organization)
        for key in ("acme-hold", "acme-hold-2")
    )
    _, acme_key = api_key_create(organization=organization)
    _, globex_key = api_key_create(organization=other_organization)
    return {
        "hold": hold,
        "other_hold": other_hold,
        "limit_request": limit_request,
        "alert": alert,
        "endpoint": endpoint,
        "grant": grant,
        "balance_alert": balance_alert,
        "invoice": invoice,
        "acme_key": acme_key,
        "globex_key": globex_key,
    }


def acme_state() -> tuple[Any, ...]:
    """Everything Acme owns that an outsider must not be able to move."""
    return (
        sorted(
            OrganizationAlert.objects.filter(organization__slug="acme").values_list(
                "id", "threshold", "enabled", "overridden"
            )
        ),
        sorted(
            Membership.objects.filter(organization__slug="acme").values_list("external_id", "role")
        ),
        sorted(
            CustomLimit.objects.filter(organization__slug="acme").values_list(
                "membership_id", "limit"
            )
        ),
        list(
            UserLimitPolicy.objects.filter(organization__slug="acme").values_list(
                "enabled", "default_limit"
            )
        ),
        list(
            UserAlertPolicy.objects.filter(organization__slug="acme").values_list(
                "enabled", "threshold"
            )
        ),
        sorted(WebhookEndpoint.objects.filter(organization__slug="acme").values_list("id")),
        sorted(
            CreditHold.objects.filter(organization__slug="acme").values_list(
                "id", "status", "settled_credits"
            )
        ),
        sorted(ApiKey.objects.filter(organization__slug="acme").values_list("id", "revoked_at")),
        UsageEvent.objects.filter(organization__slug="acme").count(),
        sorted(
            MemberUsage.objects.filter(organization__slug="acme").values_list("used", "counted")
        ),
        sorted(
            CreditGrant.objects.filter(organization__slug="acme").values_list(
                "id", "remaining", "voided_at"
            )
        ),
        CreditLedgerEntry.objects.filter(organization__slug="acme").count(),
        sorted(LimitRequest.objects.filter(organization__slug="acme").values_list("id", "status")),
        sorted(
            BalanceAlert.objects.filter(organization__slug="acme").values_list(
                "id", "type", "threshold", "notify", "status"
            )
        ),
        sorted(
            BalanceAlert.admins.through.objects.filter(
                balancealert__organization__slug="acme"
            ).values_list("balancealert_id", "membership_id")
        ),
        list(
            AutoTopUp.objects.filter(organization__slug="acme").values_list(
                "enabled", "threshold", "credits", "priority", "max_per_period"
            )
        ),
        list(
            BillingThreshold.objects.filter(organization__slug="acme").values_list(
                "enabled", "amount"
            )
        ),
        sorted(Invoice.objects.filter(organization__slug="acme").values_list("id", "credits")),
    )


class Operation(NamedTuple):
    method: str
    path: str
    body: Any
    # What Acme's own key gets, each operation run alone on the world above.
    acme_status: int


def api_operations(world: dict[str, Any]) -> list[Operation]:
    """Every operation of the API, aimed at Acme's objects, with the status
    Acme's own key must get: 2xx, except the 402 of a member over their
    custom limit (50, with 60 used), the specified answer to their check.
    """
    alert_id = world["alert"].pk
    endpoint_id = world["endpoint"].pk
    grant_id = world["grant"].pk
    balance_alert_id = world["balance_alert"].pk
    member = "member@acme.test"
    owner = "owner@acme.test"
    return [
        Operation("get", "/api/v1/organization", None, 200),
        Operation("patch", "/api/v1/organization", {"credit_allowance": "1"}, 200),
        Operation("get", "/api/v1/members", None, 200),
        Operation("post", "/api/v1/members", {"email": "new@acme.test"}, 201),
        Operation("get", f"/api/v1/members/{member}", None, 200),
        Operation("patch", f"/api/v1/members/{member}", {"role": "admin"}, 200),
        Operation("delete", f"/api/v1/members/{member}", None, 204),
        Operation(
            "post",
            "/api/v1/usage",
            {"events": [{"idempotency_key": "x1", "credits": 5, "user": member}]},
            202,
        ),
        Operation(
            "post", "/api/v1/consume", {"user": owner, "credits": 5, "idempotency_key": "x2"}, 200
        ),
        Operation("post", "/api/v1/check", {"user": member, "credits": 5}, 402),
        Operation("get", "/api/v1/usage/summary", None, 200),
        Operation("get", "/api/v1/user-limits", None, 200),
        Operation("put", "/api/v1/user-limits", {"enabled": False}, 200),
        Operation("get", "/api/v1/user-limits/custom", None, 200),
        Operation("get", "/api/v1/user-limits/exceeding", None, 200),
        Operation("get", f"/api/v1/user-limits/custom/{member}", None, 200),
        Operation("put", f"/api/v1/user-limits/custom/{member}", {"limit": None}, 200),
        Operation("delete", f"/api/v1/user-limits/custom/{member}", None, 204),
        Operation("get", "/api/v1/alerts", None, 200),
        Operation("post", "/api/v1/alerts", {"threshold_type": "absolute", "threshold": 1}, 201),
        Operation("get", f"/api/v1/alerts/{alert_id}", None, 200),
        Operation("patch", f"/api/v1/alerts/{alert_id}", {"threshold": 3}, 200),
        Operation("delete", f"/api/v1/alerts/{alert_id}", None, 204),
        Operation("get", "/api/v1/user-alerts", None, 200),
        Operation(
            "put",
            "/api/v1/user-alerts",
            {"enabled": True, "threshold": 1, "notify_user": True},
            200,
        ),
        Operation("get", "/api/v1/alert-events", None, 200),
        Operation("get", "/api/v1/webhook-endpoints", None, 200),
        Operation(
            "post",
            "/api/v1/webhook-endpoints",
            {"url": "http://127.0.0.1:9/x", "events": ["alert.triggered"]},
            201,
        ),
        Operation("delete", f"/api/v1/webhook-endpoints/{endpoint_id}", None, 204),
        Operation("get", "/api/v1/credit-balance", None, 200),
        Operation("get", "/api/v1/credit-grants", None, 200),
        Operation(
            "post",
            "/api/v1/credit-grants",
            {"kind": "promotional", "credits": 5, "idempotency_key": "x3"},
            201,
        ),
        Operation("get", f"/api/v1/credit-grants/{grant_id}", None, 200),
        Operation("post", f"/api/v1/credit-grants/{grant_id}/void", None, 200),
        Operation("get", "/api/v1/credit-ledger", None, 200),
        Operation("get", "/api/v1/balance-alerts", None, 200),
        Operation("post", "/api/v1/balance-alerts", {"type": "depleted"}, 201),
        Operation("get", f"/api/v1/balance-alerts/{balance_alert_id}", None, 200),
        Operation(
            "patch", f"/api/v1/balance-alerts/{balance_alert_id}", {"type": "recovered"}, 200
        ),
        Operation("delete", f"/api/v1/balance-alerts/{balance_alert_id}", None, 204),
        Operation("get", "/api/v1/auto-top-up", None, 200),
        Operation("put", "/api/v1/auto-top-up", {"enabled": False, "max_per_period": 9}, 200),
        Operation("get", "/api/v1/meters", None, 200),
        Operation("get", "/api/v1/billing-threshold", None, 200),
        Operation("put", "/api/v1/billing-threshold", {"enabled": False}, 200),
        Operation("get", "/api/v1/invoices", None, 200),
        Operation("get", f"/api/v1/invoices/{world['invoice'].pk}", None, 200),
        Operation("get", "/api/v1/limit-requests", None, 200),
        Operation("post", "/api/v1/limit-requests", {"user": member, "credits": 5}, 201),
        Operation("post", f"/api/v1/limit-requests/{world['limit_request'].pk}/approve", {}, 200),
        Operation("post", f"/api/v1/limit-requests/{world['limit_request'].pk}/deny", {}, 200),
        Operation("get", "/api/v1/holds", None, 200),
        Operation(
            "post", "/api/v1/holds", {"user": owner, "credits": 1, "idempotency_key": "x5"}, 201
        ),
        Operation("get", f"/api/v1/holds/{world['hold'].pk}", None, 200),
        Operation("post", f"/api/v1/holds/{world['hold'].pk}/settle", {"credits": 1}, 200),
        Operation("post", f"/api/v1/holds/{world['other_hold'].pk}/release", None, 200),
    ]


def call(client: ApiClient, operation: Operation) -> Any:
    if operation.body is None:
        return getattr(client, operation.method)(operation.path)
    return getattr(client, operation.method)(operation.path, operation.body)


def test_the_matrix_covers_every_api_operation(world):
    schema = ninja_api.get_openapi_schema()
    documented = {
        (method, path.removeprefix("/api/v1"))
        for path, operations in schema["paths"].items()
        for method in operations
    }
    # The object each documented path names, as the matrix aims it at Acme's;
    # a path left out stays a template that no operation's path can equal.
    object_ids = {
        "/members/{user}": ("{user}", "member@acme.test"),
        "/user-limits/custom/{user}": ("{user}", "member@acme.test"),
        "/alerts/{id}": ("{id}", str(world["alert"].pk)),
        "/webhook-endpoints/{id}": ("{id}", str(world["endpoint"].pk)),
        "/credit-grants/{id}": ("{id}", str(world["grant"].pk)),
        "/credit-grants/{id}/void": ("{id}", str(world["grant"].pk)),
        "/balance-alerts/{id}": ("{id}", str(world["balance_alert"].pk)),
        "/invoices/{id}": ("{id}", str(world["invoice"].pk)),
        "/limit-requests/{id}/approve": ("{id}", str(world["limit_request"].pk)),
        "/limit-requests/{id}/deny": ("{id}", str(world["limit_request"].pk)),
        "/holds/{id}": ("{id}", str(world["hold"].pk)),
        "/holds/{id}/settle": ("{id}", str(world["hold"].pk)),
        "/holds/{id}/release": ("{id}", str(world["other_hold"].pk)),
    }
    called = {(operation.method, operation.path) for operation in api_operations(world)}
    covered = set()
    for doc_method, doc_path in documented:
        path = doc_path
        if doc_path in object_ids:
            placeholder, object_id = object_ids[doc_path]
            path = doc_path.replace(placeholder, object_id)
        if (doc_method, "/api/v1" + path) in called:
            covered.add((doc_method, doc_path))

    assert documented - covered == set()


def test_another_organizations_key_never_reaches_acme(world):
    before = acme_state()
    globex = ApiClient(world["globex_key"])
    # A path with one of these names an object of Acme's.
    acme_objects = {
        "member@acme.test",
        str(world["alert"].pk),
        str(world["endpoint"].pk),
        str(world["grant"].pk),
        str(world["balance_alert"].pk),
        str(world["invoice"].pk),
        str(world["limit_request"].pk),
        str(world["hold"].pk),
        str(world["other_hold"].pk),
    }

    for method, path, body, _ in api_operations(world):
        response = call(globex, Operation(method, path, body, 0))
        assert response.status_code < 500, (method, path)
        text = response.content.decode()
        sent = path + str(body)
        for marker in ACME_MARKERS:
            # An error may echo what the caller sent; nothing else of Acme's may show.
            assert marker in sent or marker not in text, (method, path, marker)
        if acme_objects & set(path.split("/")):
            assert response.status_code == 404, (method, path)

    assert acme_state() == before


@pytest.mark.parametrize(
    "object_path",
    [
        "/api/v1/members/member@acme.test",
        "/api/v1/user-limits/custom/member@acme.test",
        "/api/v1/alerts/{alert}",
        "/api/v1/balance-alerts/{balance_alert}",
    ],
)
def test_acme_objects_are_404_for_another_key(world, object_path):
    globex = ApiClient(world["globex_key"])
    path = object_path.replace("{alert}", str(world["alert"].pk)).replace(
        "{balance_alert}", str(world["balance_alert"].pk)
    )

    for method in ("get", "delete"):
        assert getattr(globex, method)(path).status_code == 404
    endpoint = world["endpoint"].pk
    assert globex.delete(f"/api/v1/webhook-endpoints/{endpoint}").status_code == 404


def test_acmes_grants_are_404_for_another_key_and_its_lists_hold_none(world):
    globex = ApiClient(world["globex_key"])
    grant = world["grant"].pk
    before = acme_state()

    assert globex.get(f"/api/v1/credit-grants/{grant}").status_code == 404
    assert globex.post(f"/api/v1/credit-grants/{grant}/void").status_code == 404
    # Globex's own: its grant of 7, none of Acme's 1000.
    assert globex.get("/api/v1/credit-balance").json()["balance"] == "7"
    [own] = globex.get("/api/v1/credit-grants").json()["data"]
    assert own["credits"] == "7"
    assert {e["grant_id"] for e in globex.get("/api/v1/credit-ledger").json()["data"]} == {
        own["id"]
    }
    assert globex.get("/api/v1/balance-alerts").json()["data"] == []
    assert globex.get("/api/v1/auto-top-up").json()["enabled"] is False
    # Acme's key and body, sent by Globex: a grant of Globex's, not a replay of Acme's.
    same = {"kind": "purchased", "credits": 1000, "note": "Acme Inc", "idempotency_key": "g"}
    created = globex.post("/api/v1/credit-grants", same)
    assert created.status_code == 201, created.content
    assert created.json()["id"] != grant
    assert acme_state() == before


def test_usage_for_an_acme_member_cannot_be_sent_with_another_key(world):
    globex = ApiClient(world["globex_key"])
    events = [{"idempotency_key": "k", "credits": 5, "user": "member@acme.test"}]

    ingest = globex.post("/api/v1/usage", {"events": events})
    consume = globex.post(
        "/api/v1/consume", {"user": "member@acme.test", "credits": 5, "idempotency_key": "k2"}
    )

    assert ingest.status_code == 422
    assert consume.status_code in (404, 422)
    assert UsageEvent.objects.filter(organization__slug="acme").count() == 1


@pytest.mark.parametrize("key_kind", ["none", "malformed", "unknown", "revoked"])
def test_no_operation_answers_without_a_valid_key(world, key_kind):
    if key_kind == "revoked":
        api_key = ApiKey.objects.filter(organization__slug="acme").latest("created_at")
        api_key_revoke(api_key=api_key)
        client = ApiClient(world["acme_key"])
    elif key_kind == "none":
        client = ApiClient(None)
    elif key_kind == "malformed":
        client = ApiClient(None)
        client.headers = {"Authorization": "Basic abc"}
    else:
        client = ApiClient("hr_unknown")
    before = acme_state()

    for operation in api_operations(world):
        response = call(client, operation)
        assert response.status_code == 401, (key_kind, operation.method, operation.path)
        assert response.json()["error"]["code"] in ("unauthenticated", "invalid_api_key")

    assert acme_state() == before


def test_acmes_own_key_reaches_every_operation(world):
    """Each operation, alone on the same world (its changes rolled back after
    it), answers Acme's key with exactly its own success: an operation broken
    into a 404, a 409 or a 422 fails here.
    """
    acme = ApiClient(world["acme_key"])
    answered = {}

    for operation in api_operations(world):
        with transaction.atomic():
            response = call(acme, operation)
            transaction.set_rollback(True)
        answered[(operation.method, operation.path)] = (
            response.status_code,
            response.content.decode()[:200],
        )

    expected = {
        (operation.method, operation.path): operation.acme_status
        for operation in api_operations(world)
    }
    assert {key: status for key, (status, _) in answered.items()} == expected, answered


# Pages


def page_urls(world: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    alert_id = world["alert"].pk
    limit_request_id = world["limit_request"].pk
    endpoint_id = world["endpoint"].pk
    balance_alert_id = world["balance_alert"].pk
    member_id = Membership.objects.get(user__email="member@acme.test").pk
    acme_key_id = ApiKey.objects.filter(organization__slug="acme").latest("created_at").pk
    return {
        "admin": [
            ("get", "/settings/limits/"),
            ("get", "/settings/limits/alerts/new/"),
            ("post", "/settings/limits/alerts/new/"),
            ("get", f"/settings/limits/alerts/{alert_id}/"),
            ("post", f"/settings/limits/alerts/{alert_id}/"),
            ("get", f"/settings/limits/alerts/{alert_id}/delete/"),
            ("post", f"/settings/limits/alerts/{alert_id}/delete/"),
            ("post", f"/settings/limits/alerts/{alert_id}/switch/"),
            ("post", f"/settings/limits/alerts/{alert_id}/reset/"),
            ("post", "/settings/limits/user-alerts/"),
            ("post", "/settings/limits/user-limits/"),
            ("post", "/settings/limits/custom-limits/"),
            ("get", f"/settings/limits/custom-limits/{member_id}/"),
            ("post", f"/settings/limits/custom-limits/{member_id}/"),
            ("get", f"/settings/limits/custom-limits/{member_id}/delete/"),
            ("post", f"/settings/limits/custom-limits/{member_id}/delete/"),
            ("get", "/usage/"),
            ("get", "/usage/export.csv"),
            ("get", "/members/search/?q=acme"),
            ("get", "/settings/members/"),
            ("get", "/settings/members/?q=member&page=1"),
            ("post", f"/settings/members/{member_id}/role/"),
            ("get", f"/settings/members/{member_id}/remove/"),
            ("post", f"/settings/members/{member_id}/remove/"),
            ("get", "/settings/api-keys/"),
            ("post", "/settings/api-keys/"),
            ("get", f"/settings/api-keys/{acme_key_id}/revoke/"),
            ("post", f"/settings/api-keys/{acme_key_id}/revoke/"),
            ("get", "/settings/webhooks/"),
            ("post", "/settings/webhooks/new/"),
            ("get", f"/settings/webhooks/{endpoint_id}/remove/"),
            ("post", f"/settings/webhooks/{endpoint_id}/remove/"),
            ("get", "/credits/"),
            ("get", "/credits/balance-alerts/new/"),
            ("post", "/credits/balance-alerts/new/"),
            ("get", f"/credits/balance-alerts/{balance_alert_id}/"),
            ("post", f"/credits/balance-alerts/{balance_alert_id}/"),
            ("get", f"/credits/balance-alerts/{balance_alert_id}/delete/"),
            ("post", f"/credits/balance-alerts/{balance_alert_id}/delete/"),
            ("post", "/credits/auto-top-up/"),
            ("post", "/settings/limits/billing-threshold/"),
            ("get", f"/settings/limits/requests/{limit_request_id}/approve/"),
            ("post", f"/settings/limits/requests/{limit_request_id}/approve/"),
            ("get", f"/settings/limits/requests/{limit_request_id}/deny/"),
            ("post", f"/settings/limits/requests/{limit_request_id}/deny/"),
        ],
        "member": [
            ("get", "/"),
            ("get", "/me/usage/"),
            ("get", "/assistant/"),
            ("post", "/me/limit-request/"),
            ("post", "/me/limit-request/withdraw/"),
        ],
    }


def test_the_matrix_covers_every_page(world):
    names = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if str(pattern.pattern).startswith(("admin/", "api/")):
                    continue
                walk(pattern.url_patterns)
            elif pattern.name:
                names.add(pattern.name)

    walk(get_resolver().url_patterns)
    expected = {
        "home",
        "login",
        "logout",
        "switch_organization",
        "member_search",
        "limits_settings",
        "alert_add",
        "alert_edit",
        "alert_delete",
        "alert_switch",
        "alert_reset",
        "user_alerts_save",
        "user_limits_save",
        "custom_limit_add",
        "custom_limit_edit",
        "custom_limit_remove",
        "usage_monitor",
        "usage_export",
        "my_usage",
        "assistant",
        "members_settings",
        "member_role",
        "member_remove",
        "api_keys_settings",
        "api_key_revoke",
        "webhooks_settings",
        "webhook_add",
        "webhook_remove",
        "credits_settings",
        "balance_alert_add",
        "balance_alert_edit",
        "balance_alert_delete",
        "auto_top_up_save",
        "billing_threshold_save",
        "limit_request_approve",
        "limit_request_deny",
        "limit_request_ask",
        "limit_request_withdraw",
    }
    # A new page must join the matrix below: this list is what it covers.
    assert names == expected


def test_admins_reach_every_admin_page(world, owner):
    client = logged_in(owner)
    for method, path in page_urls(world)["admin"]:
        if method == "get":
            assert client.get(path).status_code == 200, path


def test_members_get_403_on_every_admin_page_and_change_nothing(world, member):
    client = logged_in(member)
    before = acme_state()

    for method, path in page_urls(world)["admin"]:
        response = getattr(client, method)(path)
        assert response.status_code == 403, (method, path)
        assert "Only Admins can configure credit alerts and limits." in response.content.decode()
    for method, path in page_urls(world)["member"]:
        # 422: the request for more credits posted empty, its form shown again.
        assert getattr(client, method)(path).status_code in (200, 302, 422), path

    assert acme_state() == before


def test_another_organizations_admin_sees_only_their_own(world, outsider):
    client = logged_in(outsider)
    before = acme_state()

    for method, path in page_urls(world)["admin"] + page_urls(world)["member"]:
        response = getattr(client, method)(path)
        assert response.status_code < 500, (method, path)
        has_acme_object = any(part.isdigit() for part in path.split("/"))
        if has_acme_object:
            assert response.status_code == 404, (method, path)
        text = response.content.decode()
        for marker in ("member@acme.test", "owner@acme.test", "Acme Inc"):
            assert marker not in text, (method, path, marker)

    assert acme_state() == before


def test_anonymous_visitors_are_sent_to_log_in(world):
    client = Client()
    before = acme_state()

    for method, path in page_urls(world)["admin"] + page_urls(world)["member"]:
        response = getattr(client, method)(path)
        assert response.status_code == 302, (method, path)
        assert response["Location"].startswith("/accounts/login/?next="), path

    assert acme_state() == before
