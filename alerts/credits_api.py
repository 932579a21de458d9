"""The credit balance over the API (SPEC §9): the balance, grants and their
ledger, balance alerts, the auto top-up.

Shapes only: what a grant, an alert or a top-up may be is decided by the
services (alerts/services/credits.py, credit_settings.py), which answer a
refusal as a 422 naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Schema, Status
from pydantic import Field, StrictBool, StrictInt, field_validator

from accounts.apiauth import request_organization
from accounts.models import Membership, Organization
from accounts.selectors import memberships_by_external_id
from alerts.models import BalanceAlert
from alerts.services import credit_settings
from alerts.services.credits import credit_grant_create, credit_grant_void
from billing.balance import credit_balance_get
from billing.grants import status_is
from billing.models import (
    GRANT_PRIORITY_DEFAULT,
    GRANT_PRIORITY_MAX,
    GRANT_PRIORITY_MIN,
    CreditGrant,
    CreditLedgerEntry,
)
from billing.services.grants import GrantInput, grant_get
from config.apikit import Page, StrictSchema, not_null, paginate, round_trip_put
from config.credits import Credits, CreditsOut
from config.errors import ErrorOut

router = Router()
TAGS = ["credits"]

GrantKindName = Literal["purchased", "promotional", "top_up", "adjustment"]
GrantStatusName = Literal["pending", "active", "depleted", "expired", "voided"]
LedgerEntryTypeName = Literal["grant", "drawdown", "expiry", "void"]
BalanceAlertTypeName = Literal["depleted", "dropped", "recovered"]
NotifyName = Literal["all_admins", "specific_admins"]

# Moments a grant may name: far enough from the calendar's ends that the
# dates computed from them (an expiry notice a week before) exist.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# An auto top-up's grant expires this many days after it is made, at most.
MAX_EXPIRES_AFTER_DAYS = 36500
MAX_TOP_UPS_PER_PERIOD = 1000


def _moment(value: datetime | None) -> datetime | None:
    """Timestamps without an offset are read as UTC; the moment must be one
    the calendar can compute with.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc < LATEST:
        raise ValueError("must be between 1970-01-01 and 9000-01-01 (UTC)")
    return in_utc


# Schemas


class GrantOut(Schema):
    id: int
    kind: GrantKindName
    credits: CreditsOut
    remaining: CreditsOut
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    note: str
    status: GrantStatusName
    created_at: datetime


class GrantList(Schema):
    data: list[GrantOut]
    next_cursor: str | None


class GrantQuery(Page):
    status: GrantStatusName | None = None


class GrantCreate(StrictSchema):
    kind: GrantKindName
    credits: Credits
    priority: StrictInt = Field(
        default=GRANT_PRIORITY_DEFAULT,
        ge=GRANT_PRIORITY_MIN,
        le=GRANT_PRIORITY_MAX,
        description="1-100; lower is drawn first.",
    )
    effective_at: datetime | None = Field(
        default=None, description="Default: now. Without an offset: UTC."
    )
    expires_at: datetime | None = Field(
        default=None, description="Null: never. After effective_at. Without an offset: UTC."
    )
    note: str = Field(default="", max_length=500)
    idempotency_key: str = Field(min_length=1, max_length=255)

    _moments = field_validator("effective_at", "expires_at")(_moment)


class CreditBalanceOut(Schema):
    balance: CreditsOut | None = Field(
        description="Allowance left this period plus the active grants' remaining credits; "
        "null for an organization with no allowance that never had a grant."
    )
    allowance: CreditsOut | None
    allowance_remaining: CreditsOut | None
    grants_remaining: CreditsOut
    overage: CreditsOut
    period_start: datetime
    period_end: datetime
    grants: list[GrantOut] = Field(description="The active grants, in drawdown order.")


class LedgerEntryOut(Schema):
    id: int
    type: LedgerEntryTypeName
    grant_id: int
    credits: CreditsOut = Field(description="Positive for `grant`, negative for the others.")
    at: datetime


class LedgerList(Schema):
    data: list[LedgerEntryOut]
    next_cursor: str | None


class BalanceAlertOut(Schema):
    id: int
    type: BalanceAlertTypeName
    threshold: CreditsOut | None
    notify: NotifyName
    admins: list[str]
    status: Literal["armed", "in_alarm"]
    triggered_at: datetime | None


class BalanceAlertList(Schema):
    data: list[BalanceAlertOut]
    next_cursor: str | None


class BalanceAlertCreate(StrictSchema):
    type: BalanceAlertTypeName
    threshold: Credits | None = Field(default=None, description="Only for `dropped`.")
    notify: NotifyName = "all_admins"
    admins: list[str] = []


class BalanceAlertPatch(StrictSchema):
    type: BalanceAlertTypeName | None = Field(
        default=None,
        description="A type other than `dropped` without a threshold sent clears the threshold.",
    )
    threshold: Credits | None = None
    notify: NotifyName | None = None
    admins: list[str] | None = None

    _no_nulls = field_validator("type", "notify", "admins", mode="before")(not_null)


class AutoTopUpOut(Schema):
    enabled: bool
    threshold: CreditsOut | None
    credits: CreditsOut | None
    priority: int
    expires_after_days: int | None
    max_per_period: int


class AutoTopUpIn(StrictSchema):
    enabled: StrictBool | None = None
    threshold: Credits | None = Field(
        default=None, description="Top up when a write takes the balance below this."
    )
    credits: Credits | None = Field(default=None, description="The top-up grant's credits.")
    priority: StrictInt | None = Field(default=None, ge=GRANT_PRIORITY_MIN, le=GRANT_PRIORITY_MAX)
    expires_after_days: StrictInt | None = Field(
        default=None, ge=1, le=MAX_EXPIRES_AFTER_DAYS, description="Null: top-ups never expire."
    )
    max_per_period: StrictInt | None = Field(default=None, ge=1, le=MAX_TOP_UPS_PER_PERIOD)

    _no_nulls = field_validator("enabled", "priority", "max_per_period", mode="before")(not_null)


# The balance


def _grant_out(grant: CreditGrant, now: datetime) -> dict[str, Any]:
    return {
        "id": grant.pk,
        "kind": grant.kind,
        "credits": grant.credits,
        "remaining": grant.remaining,
        "priority": grant.priority,
        "effective_at": grant.effective_at,
        "expires_at": grant.expires_at,
        "note": grant.note,
        "status": grant.status_at(now),
        "created_at": grant.created_at,
    }


@router.get("/credit-balance", response=CreditBalanceOut, tags=TAGS)
def credit_balance_detail(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    balance = credit_balance_get(organization=request_organization(request), now=now)
    return {
        "balance": balance.balance,
        "allowance": balance.allowance,
        "allowance_remaining": balance.allowance_remaining,
        "grants_remaining": balance.grants_remaining,
        "overage": balance.overage,
        "period_start": balance.period.start,
        "period_end": balance.period.end,
        "grants": [_grant_out(grant, now) for grant in balance.grants],
    }


# Grants


@router.get("/credit-grants", response=GrantList, tags=TAGS, description="Newest first.")
def credit_grant_list(request: HttpRequest, query: Query[GrantQuery]) -> dict[str, Any]:
    now = timezone.now()
    grants = CreditGrant.objects.filter(organization=request_organization(request))
    if query.status is not None:
        grants = grants.filter(status_is(query.status, now))
    return paginate(
        grants, query, lambda rows: [_grant_out(g, now) for g in rows], newest_first=True
    )


@router.post(
    "/credit-grants",
    response={200: GrantOut, 201: GrantOut, 409: ErrorOut},
    tags=TAGS,
    description=(
        "Creates a grant: 201. A repeat with the same `idempotency_key` and the same body "
        "answers 200 with the grant the first request made, as it stands now (nothing more "
        "is granted); the "
        "same key with another body is a 409 `idempotency_key_reused`."
    ),
)
def credit_grant_post(request: HttpRequest, payload: GrantCreate) -> Status[dict[str, Any]]:
    created = credit_grant_create(
        organization=request_organization(request),
        grant=GrantInput(
            kind=payload.kind,
            credits=payload.credits,
            priority=payload.priority,
            effective_at=payload.effective_at,
            expires_at=payload.expires_at,
            note=payload.note,
            idempotency_key=payload.idempotency_key,
        ),
    )
    return Status(200 if created.replayed else 201, _grant_out(created.grant, timezone.now()))


@router.get("/credit-grants/{id}", response=GrantOut, tags=TAGS)
def credit_grant_detail(request: HttpRequest, id: int) -> dict[str, Any]:
    grant = grant_get(organization=request_organization(request), grant_id=id)
    return _grant_out(grant, timezone.now())


@router.post(
    "/credit-grants/{id}/void",
    response=GrantOut,
    tags=TAGS,
    description="Sets `remaining` to 0 at once. Voiding a voided grant changes nothing: 200.",
)
def credit_grant_void_post(request: HttpRequest, id: int) -> dict[str, Any]:
    grant = credit_grant_void(organization=request_organization(request), grant_id=id)
    return _grant_out(grant, timezone.now())


# The ledger


@router.get("/credit-ledger", response=LedgerList, tags=TAGS, description="Newest first.")
def credit_ledger_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    entries = CreditLedgerEntry.objects.filter(organization=request_organization(request))
    return paginate(
        entries,
        page,
        lambda rows: [
            {
                "id": entry.pk,
                "type": entry.type,
                "grant_id": entry.grant_id,
                "credits": entry.credits,
                "at": entry.at,
            }
            for entry in rows
        ],
        newest_first=True,
    )


# Balance alerts


def _balance_alert_out(alert: BalanceAlert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "type": alert.type,
        "threshold": alert.threshold,
        "notify": alert.notify,
        "admins": sorted(admin.external_id for admin in alert.admins.all()),
        "status": alert.status,
        "triggered_at": alert.triggered_at,
    }


def _balance_alert_of(request: HttpRequest, alert_id: int) -> BalanceAlert:
    return credit_settings.balance_alert_get(
        organization=request_organization(request), alert_id=alert_id
    )


def _admins(organization: Organization, external_ids: list[str]) -> list[Membership]:
    return memberships_by_external_id(
        organization=organization, external_ids=external_ids, field="admins"
    )


@router.get("/balance-alerts", response=BalanceAlertList, tags=TAGS)
def balance_alert_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    alerts = BalanceAlert.objects.filter(
        organization=request_organization(request)
    ).prefetch_related("admins")
    return paginate(alerts, page, lambda rows: [_balance_alert_out(a) for a in rows])


@router.post(
    "/balance-alerts",
    response={201: BalanceAlertOut},
    tags=TAGS,
    description="At most 10 per organization: the 11th is a 422 `too_many_alerts`.",
)
def balance_alert_post(request: HttpRequest, payload: BalanceAlertCreate) -> Status[dict[str, Any]]:
    organization = request_organization(request)
    alert = credit_settings.balance_alert_create(
        organization=organization,
        alert_type=payload.type,
        threshold=payload.threshold,
        notify=payload.notify,
        admins=_admins(organization, payload.admins),
    )
    return Status(201, _balance_alert_out(alert))


@router.get("/balance-alerts/{id}", response=BalanceAlertOut, tags=TAGS)
def balance_alert_detail(request: HttpRequest, id: int) -> dict[str, Any]:
    return _balance_alert_out(_balance_alert_of(request, id))


@router.patch("/balance-alerts/{id}", response=BalanceAlertOut, tags=TAGS)
def balance_alert_patch(
    request: HttpRequest, id: int, payload: BalanceAlertPatch
) -> dict[str, Any]:
    alert = _balance_alert_of(request, id)
    given = payload.model_fields_set
    alert_type = payload.type or alert.type
    if "threshold" in given:
        threshold = payload.threshold
    elif alert_type != alert.type and alert_type != "dropped":
        threshold = None  # only `dropped` has one
    else:
        threshold = alert.threshold
    updated = credit_settings.balance_alert_update(
        alert=alert,
        alert_type=alert_type,
        threshold=threshold,
        notify=payload.notify or alert.notify,
        admins=(
            list(alert.admins.all())
            if payload.admins is None
            else _admins(alert.organization, payload.admins)
        ),
    )
    return _balance_alert_out(updated)


@router.delete("/balance-alerts/{id}", response={204: None}, tags=TAGS)
def balance_alert_delete(request: HttpRequest, id: int) -> Status[None]:
    credit_settings.balance_alert_delete(alert=_balance_alert_of(request, id))
    return Status(204, None)


# Auto top-up


@router.get("/auto-top-up", response=AutoTopUpOut, tags=TAGS)
def auto_top_up_detail(request: HttpRequest) -> dict[str, Any]:
    top_up = credit_settings.auto_top_up_get(organization=request_organization(request))
    return top_up.settings()


@round_trip_put(router, "/auto-top-up", response=AutoTopUpOut, tags=TAGS)
def auto_top_up_put(request: HttpRequest, payload: AutoTopUpIn) -> dict[str, Any]:
    organization = request_organization(request)
    current = credit_settings.auto_top_up_get(organization=organization).settings()
    settings = {**current, **{name: getattr(payload, name) for name in payload.model_fields_set}}
    top_up = credit_settings.auto_top_up_set(
        organization=organization, settings=credit_settings.AutoTopUpInput(**settings)
    )
    return top_up.settings()
