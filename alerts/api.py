from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.db.models import Q
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field, PlainSerializer, StrictBool, WithJsonSchema, field_validator

from accounts.apiauth import request_organization
from accounts.models import Membership, Organization
from accounts.selectors import memberships_by_external_id
from alerts import webhooks
from alerts.models import (
    MONEY_THRESHOLD_TYPES,
    Firing,
    OrganizationAlert,
    UserAlertPolicy,
    WebhookEndpoint,
)
from alerts.selectors import (
    alerts_with_status,
    organization_alert_get,
    organization_alerts,
    webhook_endpoint_get,
    webhook_endpoints_list,
)
from alerts.services import configuration
from billing.meters import meters_by_key
from billing.models import CREDITS_METER, Meter
from billing.selectors import current_period
from config.apikit import Page, StrictSchema, not_null, paginate, round_trip_put
from config.credits import Credits, CreditsOut, format_credits
from config.errors import ErrorOut, InvalidInput, NotFound

router = Router()

ThresholdTypeName = Literal["percentage", "absolute", "spend", "invoice_total", "forecast"]
NotifyName = Literal["all_admins", "specific_admins"]
FiringKindName = Literal[
    "organization_alert",
    "user_alert",
    "user_limit",
    "balance_depleted",
    "balance_dropped",
    "balance_recovered",
]
# alerts.webhooks.WEBHOOK_EVENT_TYPES (tests/alerts/test_credits_api.py checks they agree).
WebhookEventName = Literal[
    "alert.triggered",
    "user_alert.triggered",
    "user_limit.reached",
    "credit_balance.depleted",
    "credit_balance.dropped",
    "credit_balance.recovered",
    "credit_balance.top_up_limit_reached",
    "credit_grant.created",
    "credit_grant.expiring",
    "invoice.created",
    "limit_request.created",
    "limit_request.approved",
    "limit_request.denied",
]
# Alert events' figures: credits, or amounts of money (up to 12 fractional
# digits: credits x price) for `spend` and `invoice_total` alerts.
FigureOut = Annotated[
    Decimal,
    PlainSerializer(format_credits, return_type=str, when_used="always"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?\d+(\.\d{1,12})?$",
            "description": "Credits, or an amount of money for spend and invoice_total alerts.",
        },
        mode="serialization",
    ),
]
CURRENCY_FIELD = Field(
    description="The currency of a `spend` or `invoice_total` threshold; null otherwise."
)


class AlertOut(Schema):
    id: int
    source: Literal["organization", "plan", "plan_override"] = Field(
        description="`plan`: inherited from the organization's plan, and following it; "
        "`plan_override`: inherited, then changed here; `organization`: its own."
    )
    enabled: bool = Field(description="False: turned off here; it never fires.")
    meter: str = Field(description="The meter it watches: `credits` or a platform meter's key.")
    threshold_type: ThresholdTypeName
    threshold: CreditsOut
    currency: str | None = CURRENCY_FIELD
    notify: NotifyName
    admins: list[str]
    status: Literal["ok", "in_alarm"]
    triggered_at: datetime | None


class AlertList(Schema):
    data: list[AlertOut]
    next_cursor: str | None


class AlertCreate(StrictSchema):
    meter: str = Field(
        default="credits",
        min_length=1,
        max_length=64,
        description="`credits`, or a platform meter's key (GET /meters): then `threshold_type` "
        "is `absolute`, in the meter's unit.",
    )
    threshold_type: ThresholdTypeName
    threshold: Credits
    notify: NotifyName = "all_admins"
    admins: list[str] = []
    fire_if_already_exceeded: StrictBool = True


class AlertPatch(StrictSchema):
    threshold_type: ThresholdTypeName | None = None
    threshold: Credits | None = None
    notify: NotifyName | None = None
    admins: list[str] | None = None
    enabled: StrictBool | None = Field(
        default=None,
        description="False turns the alert off here, true on again. On an alert inherited from "
        "the plan, any change makes it this organization's own copy (`plan_override`).",
    )

    _no_nulls = field_validator(
        "threshold_type", "threshold", "notify", "admins", "enabled", mode="before"
    )(not_null)


class UserAlertPolicyOut(Schema):
    enabled: bool
    threshold: CreditsOut | None
    notify_user: bool
    admins: list[str]


class UserAlertPolicyIn(StrictSchema):
    enabled: StrictBool | None = None
    threshold: Credits | None = None
    notify_user: StrictBool | None = None
    admins: list[str] | None = None
    fire_if_already_exceeded: StrictBool | None = Field(
        default=None,
        description=(
            "Write-only. True: members already past the threshold who have not been told "
            "are told now. False: they are not told this billing period; members who cross "
            "the threshold later are. Omitted: as chosen before, except that a new "
            "threshold notifies at once."
        ),
    )

    _no_nulls = field_validator(
        "enabled", "notify_user", "admins", "fire_if_already_exceeded", mode="before"
    )(not_null)


class AlertEventOut(Schema):
    id: int
    kind: FiringKindName
    alert_id: int | None = Field(
        description="The organization alert (`organization_alert`) or the balance alert "
        "(`balance_*`) that fired; null for the others and for a deleted alert."
    )
    user: str | None
    meter: str = Field(description="`credits`, or the meter an alert on a meter watched.")
    threshold: CreditsOut
    threshold_credits: FigureOut
    value: FigureOut = Field(
        description="Usage when it fired; for `balance_*`, the balance after the change; "
        "for `spend` and `invoice_total` alerts, the spend or invoice total (money)."
    )
    currency: str | None = Field(
        description="For `spend` and `invoice_total` alerts: the currency of `threshold`, "
        "`threshold_credits` and `value`; null otherwise."
    )
    threshold_type: ThresholdTypeName | None = Field(
        description="The organization alert's threshold type when it fired; null for the others."
    )
    projected: CreditsOut | None = Field(
        description="A `forecast` alert: the usage projected at the period's end, at the pace "
        "when it fired; null otherwise."
    )
    projected_at: datetime | None = Field(
        description="A `forecast` alert: when usage reaches the threshold at that pace."
    )
    triggered_at: datetime
    period_start: datetime


class AlertEventList(Schema):
    data: list[AlertEventOut]
    next_cursor: str | None


class AlertEventQuery(Page):
    kind: FiringKindName | None = None
    alert_id: int | None = Field(
        default=None,
        description="An organization alert's or a balance alert's id: with `kind`, to tell which.",
    )


class WebhookEndpointOut(Schema):
    id: int
    url: str
    events: list[str]
    created_at: datetime
    disabled: bool


class WebhookEndpointCreated(WebhookEndpointOut):
    secret: str


class WebhookEndpointList(Schema):
    data: list[WebhookEndpointOut]
    next_cursor: str | None


class WebhookEndpointIn(StrictSchema):
    url: str
    events: list[WebhookEventName]


# Organization alerts (path parameters are named as in the specification: `{id}`)


def _alert_of(request: HttpRequest, alert_id: int) -> OrganizationAlert:
    alert = organization_alert_get(organization=request_organization(request), alert_id=alert_id)
    if alert is None:
        raise NotFound(f"No alert {alert_id} in this organization.", code="alert_not_found")
    return alert


def _alerts_out(
    organization: Organization, alerts: list[OrganizationAlert]
) -> list[dict[str, Any]]:
    """The alerts with their status in the current period, in one query for all of them."""
    rows = alerts_with_status(
        organization=organization, alerts=alerts, period=current_period(organization)
    )
    return [
        {
            "id": row.alert.pk,
            "source": row.alert.source,
            "enabled": row.alert.enabled,
            "meter": row.alert.meter.key if row.alert.meter else CREDITS_METER,
            "threshold_type": row.alert.threshold_type,
            "threshold": row.alert.threshold,
            "currency": (
                organization.currency if row.alert.threshold_type in MONEY_THRESHOLD_TYPES else None
            ),
            "notify": row.alert.notify,
            "admins": [admin.external_id for admin in row.alert.admins.all()],
            "status": row.status,
            "triggered_at": row.triggered_at,
        }
        for row in rows
    ]


def _alert_out(request: HttpRequest, alert_id: int) -> dict[str, Any]:
    """Read back after a write: admins and status as they now stand."""
    return _alerts_out(request_organization(request), [_alert_of(request, alert_id)])[0]


def _admins(organization: Organization, external_ids: list[str] | None) -> list[Membership] | None:
    if external_ids is None:
        return None
    return memberships_by_external_id(
        organization=organization, external_ids=external_ids, field="admins"
    )


@router.get("/alerts", response=AlertList, tags=["alerts"])
def alert_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    organization = request_organization(request)
    return paginate(
        organization_alerts(organization=organization),
        page,
        lambda rows: _alerts_out(organization, rows),
    )


@router.post("/alerts", response={201: AlertOut}, tags=["alerts"])
def alert_create(request: HttpRequest, payload: AlertCreate) -> Status[dict[str, Any]]:
    organization = request_organization(request)
    alert = configuration.alert_create(
        organization=organization,
        threshold_type=payload.threshold_type,
        threshold=payload.threshold,
        notify=payload.notify,
        admins=_admins(organization, payload.admins) or [],
        fire_if_already_exceeded=payload.fire_if_already_exceeded,
        meter=_meter(payload.meter),
    )
    return Status(201, _alert_out(request, alert.pk))


def _meter(key: str) -> Meter | None:
    """The platform meter named `key`; None for `credits`."""
    if key == CREDITS_METER:
        return None
    meter = meters_by_key({key}).get(key)
    if meter is None:
        raise InvalidInput(f"No meter {key!r}.", code="unknown_meter", field="meter")
    return meter


@router.get("/alerts/{id}", response=AlertOut, tags=["alerts"])
def alert_detail(request: HttpRequest, id: int) -> dict[str, Any]:
    return _alert_out(request, id)


@router.patch("/alerts/{id}", response=AlertOut, tags=["alerts"])
def alert_patch(request: HttpRequest, id: int, payload: AlertPatch) -> dict[str, Any]:
    alert = _alert_of(request, id)
    configuration.alert_update(
        alert=alert,
        threshold_type=payload.threshold_type,
        threshold=payload.threshold,
        notify=payload.notify,
        admins=_admins(alert.organization, payload.admins),
        enabled=payload.enabled,
    )
    return _alert_out(request, alert.pk)


@router.delete("/alerts/{id}", response={204: None, 409: ErrorOut}, tags=["alerts"])
def alert_delete(request: HttpRequest, id: int) -> Status[None]:
    configuration.alert_delete(alert=_alert_of(request, id))
    return Status(204, None)


# Per-user credit usage alerts


def _user_alert_policy_out(policy: UserAlertPolicy) -> dict[str, Any]:
    admins = [m.external_id for m in policy.admins.order_by("external_id")] if policy.pk else []
    return {
        "enabled": policy.enabled,
        "threshold": policy.threshold,
        "notify_user": policy.notify_user,
        "admins": admins,
    }


@router.get("/user-alerts", response=UserAlertPolicyOut, tags=["user alerts"])
def user_alert_policy_detail(request: HttpRequest) -> dict[str, Any]:
    policy = configuration.user_alert_policy_get(organization=request_organization(request))
    return _user_alert_policy_out(policy)


@round_trip_put(router, "/user-alerts", response=UserAlertPolicyOut, tags=["user alerts"])
def user_alert_policy_put(request: HttpRequest, payload: UserAlertPolicyIn) -> dict[str, Any]:
    organization = request_organization(request)
    policy = configuration.user_alert_policy_update(
        organization=organization,
        enabled=payload.enabled,
        threshold=payload.threshold,
        clear_threshold="threshold" in payload.model_fields_set and payload.threshold is None,
        notify_user=payload.notify_user,
        admins=_admins(organization, payload.admins),
        fire_if_already_exceeded=payload.fire_if_already_exceeded,
    )
    return _user_alert_policy_out(policy)


# Firing history


def _event_out(firing: Firing) -> dict[str, Any]:
    # The member's id as it is now; the one recorded when it fired if they have left.
    user = firing.membership.external_id if firing.membership else firing.user_external_id
    return {
        "id": firing.pk,
        "kind": firing.kind,
        "alert_id": firing.alert_id or firing.balance_alert_id,
        "user": user or None,
        "meter": firing.meter,
        "threshold": firing.threshold,
        "threshold_credits": firing.threshold_credits,
        "value": firing.value,
        "currency": firing.currency or None,
        "threshold_type": firing.threshold_type or None,
        "projected": firing.projected,
        "projected_at": firing.projected_at,
        "triggered_at": firing.triggered_at,
        "period_start": firing.period_start,
    }


@router.get("/alert-events", response=AlertEventList, tags=["alerts"])
def alert_event_list(request: HttpRequest, query: Query[AlertEventQuery]) -> dict[str, Any]:
    firings = Firing.objects.filter(organization=request_organization(request)).select_related(
        "membership"
    )
    if query.kind is not None:
        firings = firings.filter(kind=query.kind)
    if query.alert_id is not None:
        firings = firings.filter(Q(alert_id=query.alert_id) | Q(balance_alert_id=query.alert_id))
    return paginate(
        firings, query, lambda rows: [_event_out(firing) for firing in rows], newest_first=True
    )


# Webhook endpoints


def _endpoint_out(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.pk,
        "url": endpoint.url,
        "events": endpoint.events,
        "created_at": endpoint.created_at,
        "disabled": endpoint.disabled_at is not None,
    }


@router.get("/webhook-endpoints", response=WebhookEndpointList, tags=["webhooks"])
def webhook_endpoint_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    endpoints = webhook_endpoints_list(organization=request_organization(request))
    return paginate(endpoints, page, lambda rows: [_endpoint_out(e) for e in rows])


@router.post("/webhook-endpoints", response={201: WebhookEndpointCreated}, tags=["webhooks"])
def webhook_endpoint_create(
    request: HttpRequest, payload: WebhookEndpointIn
) -> Status[dict[str, Any]]:
    endpoint, secret = webhooks.webhook_endpoint_create(
        organization=request_organization(request), url=payload.url, events=payload.events
    )
    return Status(201, {**_endpoint_out(endpoint), "secret": secret})


@router.delete("/webhook-endpoints/{id}", response={204: None}, tags=["webhooks"])
def webhook_endpoint_delete(request: HttpRequest, id: int) -> Status[None]:
    endpoint = webhook_endpoint_get(organization=request_organization(request), endpoint_id=id)
    if endpoint is None:
        raise NotFound(
            f"No webhook endpoint {id} in this organization.",
            code="webhook_endpoint_not_found",
        )
    webhooks.webhook_endpoint_delete(endpoint=endpoint)
    return Status(204, None)
