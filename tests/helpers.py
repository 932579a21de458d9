"""The one set of helpers for tests: spending, consuming and ingesting usage
(through the services, or through the HTTP API with a client), turning
limits and alerts on, a held clock, delivery and scheduled tasks, the Django
admin, forms and pages.

Application functions are imported here, and tests call these helpers, so
that when an application module moves only this file's imports change.

Elsewhere in tests/: organizations and members come from `factories.py` and
the fixtures of `fixtures.py` (the owner/member/outsider trio, `deliver`,
`api`, and the helpers logged_in, ApiClient, run_at_once, run_in_threads);
local servers posing as Postmark and webhook receivers are in `stubs.py`;
real processes in `processes.py`; Chromium in `browser.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib import admin
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, User
from alerts.models import DeliveryStatus, Notification, OrganizationAlert, UserAlertPolicy
from alerts.services.changes import limit_policy_update
from alerts.services.configuration import alert_create, user_alert_policy_update
from alerts.services.consume import usage_consume
from alerts.services.credits import credit_grant_create
from alerts.services.ingest import IngestResult, UsageInput, usage_ingest
from billing.models import CreditGrant, UserLimitPolicy
from billing.rules import Decision
from billing.selectors import current_period, member_usage_get
from billing.services.grants import GrantInput
from config.celery import app
from tests.fixtures import logged_in

Credits = str | int | Decimal

_keys = itertools.count()


def unique_key(prefix: str = "usage") -> str:
    """An idempotency key no other call of this run has used."""
    return f"{prefix}-{next(_keys)}"


def clock_held_at(moment: datetime) -> Any:
    """An autouse fixture that holds the clock at `moment` in every test of
    the module that names it: `frozen_time = clock_held_at(NOW)`.
    """

    @pytest.fixture(autouse=True)
    def frozen_time() -> Iterator[None]:
        with time_machine.travel(moment, tick=False):
            yield

    return frozen_time


# Usage through the services


def ingest(
    organization: Any,
    credits: Credits,
    *,
    user: Membership | None = None,
    source: str = "assistant",
    key: str | None = None,
    at: datetime | None = None,
) -> IngestResult:
    """Record one usage event with `usage_ingest`: used by `user` (None: by
    no member), at `at` (None: now), under `key` (None: a fresh key).
    """
    return usage_ingest(
        organization=organization,
        events=[
            UsageInput(
                idempotency_key=key or unique_key(),
                credits=Decimal(credits),
                user=user.external_id if user is not None else None,
                source=source,
                timestamp=at,
            )
        ],
    )


def spend(
    membership: Membership,
    credits: Credits,
    *,
    source: str = "assistant",
    key: str | None = None,
    at: datetime | None = None,
) -> IngestResult:
    """`membership` used `credits`: one event of theirs, ingested."""
    return ingest(membership.organization, credits, user=membership, source=source, key=key, at=at)


def consume(
    organization: Any,
    membership: Membership,
    credits: Credits,
    *,
    source: str = "assistant",
    key: str | None = None,
) -> Decision:
    """Ask the gate (`usage_consume`) to spend `credits` for `membership`; its decision.

    `organization` is passed as given, so a test can hand over a freshly
    loaded one rather than the member's cached instance.
    """
    return usage_consume(
        organization=organization,
        membership=membership,
        credits=Decimal(credits),
        source=source,
        idempotency_key=key,
    ).decision


def counted(membership: Membership) -> Decimal:
    """What counts towards `membership`'s limit this period (excluded sources not)."""
    _, counted_usage = member_usage_get(
        membership=membership, period=current_period(membership.organization)
    )
    return counted_usage


# Usage through the HTTP API (`api` is a tests.fixtures.ApiClient)


def post_usage(api: Any, *events: dict[str, Any], status: int | None = None) -> Any:
    """POST `events` to /api/v1/usage; with `status`, assert the answer has it."""
    response = api.post("/api/v1/usage", {"events": list(events)})
    if status is not None:
        assert response.status_code == status, response.content
    return response


def post_consume(api: Any, membership: Membership, credits: Credits, *, key: str) -> Any:
    """POST a consume of `credits` by `membership` under `key` to /api/v1/consume."""
    return api.post(
        "/api/v1/consume",
        {"user": membership.external_id, "credits": credits, "idempotency_key": key},
    )


def assert_error(
    response: Any, status: int, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """The API's error envelope, with `status` (and `code`, `field` when given)."""
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    return error


# Limits and alerts


def limits_on(organization: Any, default_limit: Credits, **changes: Any) -> UserLimitPolicy:
    """Per-user limits on, at `default_limit` each; `changes` (admins,
    excluded_sources) as limit_policy_update takes them.
    """
    return limit_policy_update(
        organization=organization, enabled=True, default_limit=Decimal(default_limit), **changes
    )


def absolute_alert(
    organization: Any, threshold: Credits, *, admins: Sequence[Membership] | None = None
) -> OrganizationAlert:
    """An organization alert at `threshold` credits, telling `admins` only
    when given (all admins otherwise).
    """
    recipients = {} if admins is None else {"notify": "specific_admins", "admins": list(admins)}
    return alert_create(
        organization=organization,
        threshold_type="absolute",
        threshold=Decimal(threshold),
        **recipients,
    )


def user_alerts_on(organization: Any, threshold: Credits, **changes: Any) -> UserAlertPolicy:
    """Credit usage alerts on at `threshold` credits a member; `changes`
    (admins, notify_user, fire_if_already_exceeded) as user_alert_policy_update
    takes them.
    """
    return user_alert_policy_update(
        organization=organization, enabled=True, threshold=Decimal(threshold), **changes
    )


# Delivery


def assert_waits_for_a_retry(notification: Notification, *, attempts: int, error: str) -> None:
    """`notification`, read again, failed after `attempts` attempts with `error`
    and waits, unclaimed, for a later retry.
    """
    notification.refresh_from_db()
    assert notification.status == DeliveryStatus.PENDING
    assert notification.claimed_until is None
    assert notification.attempts == attempts
    assert notification.next_attempt_at > timezone.now()
    assert notification.last_error == error


# Scheduled tasks


def run_daily_task(task: str, *, at: datetime, every: float = 24 * 60 * 60) -> None:
    """`task` is in the beat schedule at least once a day (or `every` seconds);
    run it at `at`, as a worker finds and runs it (the task looked up by
    name, not imported here).
    """
    [entry] = [entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == task]
    assert entry["schedule"] <= every
    app.loader.import_default_modules()  # as a worker does when it starts: finds the tasks

    with time_machine.travel(at, tick=False):
        app.tasks[task].delay()


# The Django admin


def admin_models(app_label: str) -> list[type[Model]]:
    """The models of `app_label` registered in the admin, by model name."""
    return sorted(
        (model for model in admin.site._registry if model._meta.app_label == app_label),
        key=lambda model: model._meta.model_name or "",
    )


def admin_url(model: type[Model], view: str, *args: Any) -> str:
    """The admin's `view` ("changelist", "add", "change", ...) of `model`."""
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def assert_admin_pages_load(client: Client, model: type[Model]) -> dict[Model, str]:
    """`model`'s changelist lists all its rows (there is at least one), and its
    add page (where adding is allowed) and each row's change page answer 200;
    the change pages' HTML, by row.
    """
    changelist = client.get(admin_url(model, "changelist"))
    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == model.objects.count() > 0

    if admin.site._registry[model].has_add_permission(changelist.wsgi_request):
        assert client.get(admin_url(model, "add")).status_code == 200

    pages = {}
    for obj in model.objects.all():
        page = client.get(admin_url(model, "change", obj.pk))
        assert page.status_code == 200
        pages[obj] = page.content.decode()
    return pages


# Pages


def form_data(prefix: str, **fields: Any) -> dict[str, Any]:
    """POST data for the form with `prefix`: each field as `<prefix>-<name>`."""
    return {f"{prefix}-{name}": value for name, value in fields.items()}


def user_alerts_form(**fields: Any) -> dict[str, Any]:
    """The Credit Usage Alerts form of /settings/limits/: on, at 100 credits, then `fields`."""
    return form_data("user_alerts", **{"enabled": "on", "threshold": "100", **fields})


def page_html(who: Membership | User, path: str) -> str:
    """The HTML of `path` for `who` (a member or a user), logged in; asserts a 200."""
    response = logged_in(who).get(path)
    assert response.status_code == 200, response.content[:2000]
    return str(response.content.decode())


def response_html(response: Any) -> str:
    """A response's body as text, read to its end when it streams (the
    assistant's reply, /assistant/).
    """
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return str(response.content.decode())


def assert_shows(html: str, *texts: str) -> None:
    """Each of `texts` is in `html`."""
    missing = [text for text in texts if text not in html]
    assert not missing, missing


def credit_grant(
    organization: Any, credits: Credits, *, kind: str = "purchased", **fields: Any
) -> CreditGrant:
    """A credit grant made through the service (its ledger entry, balance
    alerts and events included); `fields` as `GrantInput`'s.
    """
    return credit_grant_create(
        organization=organization,
        grant=GrantInput(kind=kind, credits=Decimal(credits), **fields),
    ).grant
