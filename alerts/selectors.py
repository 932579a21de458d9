"""Reads of the alerts app: alerts with their status, the firing history,
webhook endpoints and their recent deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import (
    CharField,
    Count,
    DecimalField,
    Exists,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce

from accounts.models import Membership, Organization
from alerts.models import (
    Channel,
    DeliveryAttempt,
    Firing,
    FiringKind,
    LimitRequest,
    LimitRequestStatus,
    Notification,
    OrganizationAlert,
    WebhookEndpoint,
)
from alerts.services.rules import threshold_credits
from billing.models import CustomLimit, MemberUsage
from billing.periods import Period


@dataclass(frozen=True)
class AlertWithStatus:
    alert: OrganizationAlert
    status: str  # "in_alarm" once it has fired at its current arming this period, else "ok"
    triggered_at: datetime | None
    threshold_credits: Decimal | None  # None: a percentage while no allowance is set

    @property
    def in_alarm(self) -> bool:
        return self.status == "in_alarm"


def organization_alerts(*, organization: Organization) -> QuerySet[OrganizationAlert]:
    """The organization's alerts with their chosen admins: two queries."""
    return (
        OrganizationAlert.objects.filter(organization=organization)
        .select_related("meter")
        .prefetch_related(
            Prefetch(
                "admins",
                queryset=Membership.objects.select_related("user").order_by("external_id"),
            )
        )
    )


def organization_alert_get(
    *, organization: Organization, alert_id: int
) -> OrganizationAlert | None:
    """One alert of this organization (with its admins), or None: tenancy in one place."""
    return organization_alerts(organization=organization).filter(pk=alert_id).first()


def alerts_with_status(
    *, organization: Organization, alerts: list[OrganizationAlert], period: Period
) -> list[AlertWithStatus]:
    """Each alert's status in `period`: one query for all of them."""
    if not alerts:
        return []
    fired = dict(
        Firing.objects.filter(
            organization=organization,
            dedupe_key__in=[alert.firing_key(period) for alert in alerts],
        ).values_list("dedupe_key", "triggered_at")
    )
    rows = []
    for alert in alerts:
        triggered_at = fired.get(alert.firing_key(period))
        rows.append(
            AlertWithStatus(
                alert=alert,
                status="in_alarm" if triggered_at else "ok",
                triggered_at=triggered_at,
                threshold_credits=threshold_credits(
                    alert, period.allowance(organization.credit_allowance)
                ),
            )
        )
    return rows


def alert_status(alert: OrganizationAlert, *, period: Period) -> tuple[str, datetime | None]:
    """(`in_alarm` or `ok`, when it fired) for the current arming of the alert."""
    [row] = alerts_with_status(organization=alert.organization, alerts=[alert], period=period)
    return row.status, row.triggered_at


def firings_of_period(*, organization: Organization, period: Period) -> QuerySet[Firing]:
    """What fired in `period`, newest first, with the member each firing is about."""
    return (
        Firing.objects.filter(organization=organization, period_start=period.start)
        .select_related("membership__user")
        .order_by("-triggered_at", "-id")
    )


def members_past_user_alert_threshold(
    *, organization: Organization, period: Period, threshold: Decimal, generation: int
) -> tuple[int, int]:
    """How many members are at or past `threshold` in `period`, and how many
    of them are not yet told at this arming (`generation`) of the per-user
    alert: who saving it would email at once. One query.
    """
    told = Firing.objects.filter(
        organization=organization,
        kind=FiringKind.USER_ALERT,
        membership_id=OuterRef("membership_id"),
        period_start=period.start,
        # The dedupe key ends with the arming it fired at (alerts/services/rules.py).
        dedupe_key__endswith=f":{generation}",
    )
    counts = (
        MemberUsage.objects.filter(
            organization=organization, period_start=period.start, used__gte=threshold
        )
        .annotate(told=Exists(told))
        .aggregate(past=Count("id"), untold=Count("id", filter=Q(told=False)))
    )
    return counts["past"], counts["untold"]


# Webhook endpoints and their deliveries

RECENT_DELIVERIES = 20


def webhook_endpoints_list(*, organization: Organization) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organization=organization).order_by("created_at", "id")


def webhook_endpoint_get(*, organization: Organization, endpoint_id: int) -> WebhookEndpoint | None:
    """One endpoint of this organization: another organization's is None."""
    return WebhookEndpoint.objects.filter(organization=organization, pk=endpoint_id).first()


def webhook_deliveries_recent(
    *, organization: Organization, limit: int = RECENT_DELIVERIES
) -> list[Notification]:
    """The organization's latest webhook notifications, newest first, in one query.

    Each carries `endpoint_url` (None once the endpoint is removed: a
    notification names its endpoint by id, as text, with no foreign key) and
    `last_response_status` (the HTTP status of its latest attempt, if any).
    """
    endpoint_url = (
        WebhookEndpoint.objects.filter(organization=organization)
        .annotate(id_text=Cast("id", CharField()))
        .filter(id_text=OuterRef("recipient"))
        .values("url")[:1]
    )
    last_status = (
        DeliveryAttempt.objects.filter(notification=OuterRef("pk"))
        .order_by("-started_at", "-id")
        .values("response_status")[:1]
    )
    return list(
        Notification.objects.filter(organization=organization, channel=Channel.WEBHOOK)
        .annotate(endpoint_url=Subquery(endpoint_url), last_response_status=Subquery(last_status))
        .only(
            "id",
            "recipient",
            "event_type",
            "status",
            "attempts",
            "created_at",
            "sent_at",
            "last_error",
        )
        .order_by("-created_at", "-id")[:limit]
    )


def pending_limit_requests(*, organization: Organization, period: Period) -> list[LimitRequest]:
    """The organization's pending limit requests, oldest first, each with its
    member's usage counted this period and custom limit: one query.
    """
    custom = CustomLimit.objects.filter(membership=OuterRef("membership_id"))
    return list(
        LimitRequest.objects.filter(organization=organization, status=LimitRequestStatus.PENDING)
        .select_related("membership__user")
        .annotate(
            counted=Coalesce(
                Subquery(
                    MemberUsage.objects.filter(
                        membership=OuterRef("membership_id"), period_start=period.start
                    ).values("counted")[:1]
                ),
                Value(Decimal(0)),
                output_field=DecimalField(),
            ),
            has_custom_limit=Exists(custom),
            custom_limit=Subquery(custom.values("limit")[:1]),
        )
        .order_by("created_at", "id")
    )
