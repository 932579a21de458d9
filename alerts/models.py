from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Membership, Organization, Plan
from alerts.platform_models import (  # noqa: F401  (registered with this app from here)
    PlatformAlert,
    PlatformFiring,
    PlatformThresholdType,
)
from billing.models import CREDITS_METER, Meter
from billing.periods import Period
from config.credits import credits_field, format_credits
from config.money import money_field

MAX_ORGANIZATION_ALERTS = 25


class ThresholdType(models.TextChoices):
    PERCENTAGE = "percentage", "Percentage"
    ABSOLUTE = "absolute", "Absolute"
    SPEND = "spend", "Spend"
    INVOICE_TOTAL = "invoice_total", "Invoice total"
    FORECAST = "forecast", "Forecast"


# Thresholds that are amounts of money (SPEC §11), in the organization's currency.
MONEY_THRESHOLD_TYPES = (ThresholdType.SPEND, ThresholdType.INVOICE_TOTAL)
# Thresholds that are a percent (1-100) of the allowance: of usage, or of the
# usage projected at the period's end (SPEC §15).
PERCENT_THRESHOLD_TYPES = (ThresholdType.PERCENTAGE, ThresholdType.FORECAST)


class Recipients(models.TextChoices):
    ALL_ADMINS = "all_admins", "All Admins"
    SPECIFIC_ADMINS = "specific_admins", "Specific Admins"


class AlertSource(models.TextChoices):
    """Where an organization alert comes from (SPEC §12)."""

    ORGANIZATION = "organization", "Organization"
    PLAN = "plan", "Plan"
    PLAN_OVERRIDE = "plan_override", "Plan, changed here"


class PlanAlert(models.Model):
    """An alert every organization on the plan inherits (SPEC §12), as a copy
    of its own (OrganizationAlert.plan_alert) that fires and is recorded like
    the organization's own alerts. A change here reaches every copy the
    organization has not changed (alerts/services/plan_alerts.py).
    """

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="alerts")
    meter = models.ForeignKey(
        Meter, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    threshold_type = models.CharField(
        max_length=16,
        choices=[
            (ThresholdType.PERCENTAGE.value, ThresholdType.PERCENTAGE.label),
            (ThresholdType.ABSOLUTE.value, ThresholdType.ABSOLUTE.label),
        ],
    )
    threshold = credits_field(help_text="A percent (1-100) of the allowance, or credits.")
    enabled = models.BooleanField(default=True)
    only_future = models.BooleanField(
        default=False,
        help_text="Created not to fire for organizations already past it this period.",
    )
    # Each change that needs the organizations' usage looked at (settling,
    # alerts/services/plan_alerts.py) bumps `revision`; settling records the
    # revision it did. Behind: to settle.
    revision = models.PositiveIntegerField(default=0)
    settled_revision = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["plan", "threshold_type", "threshold", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(threshold__gt=0)
                & (~models.Q(threshold_type="percentage") | models.Q(threshold__lte=100)),
                name="plan_alert_threshold_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(meter__isnull=True) | models.Q(threshold_type="absolute"),
                name="plan_alert_meter_absolute",
            ),
        ]

    def __str__(self) -> str:
        threshold = f"{self.threshold.normalize():f}"
        if self.meter is not None:
            return f"{self.plan}: alert at {threshold} {self.meter.unit} of {self.meter.name}"
        unit = "%" if self.threshold_type == ThresholdType.PERCENTAGE else " credits"
        return f"{self.plan}: alert at {threshold}{unit}"


class PlanChange(models.Model):
    """A change of a plan's values (allowance, default per-user limit,
    price): the organizations using them are evaluated off the request
    (alerts/services/plan_settling.py); `settled_at` once done.
    """

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="+")
    fields = models.JSONField(default=list, help_text="The values it changed.")
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                condition=models.Q(settled_at__isnull=True),
                name="plan_change_unsettled",
            )
        ]

    def __str__(self) -> str:
        return f"{self.plan}: {', '.join(self.fields)} changed"


class OrganizationAlert(models.Model):
    """Fires once per billing period when organization usage reaches its threshold.

    `generation` goes up on every threshold edit: firings are unique per
    (alert, period, generation), so an edit re-arms the alert.
    `quiet_period_start`: created with fire_if_already_exceeded=False while
    already past the threshold, it stays quiet until the next period.

    A copy of its plan's alert when `plan_alert` is set: it follows the
    plan's alert until the organization changes it (`overridden`).
    `only_future_pending`: the copy of a plan alert created only for future
    crossings, not yet checked for being already past (a background task
    does it); until then a change of configuration does not fire it, a
    crossing does.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alerts")
    plan_alert = models.ForeignKey(
        PlanAlert, on_delete=models.CASCADE, null=True, blank=True, related_name="copies"
    )
    overridden = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    only_future_pending = models.BooleanField(default=False)
    meter = models.ForeignKey(
        Meter,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: credits.",
    )
    threshold_type = models.CharField(max_length=16, choices=ThresholdType.choices)
    threshold = credits_field(
        help_text="A percent (1-100) of the allowance, credits, the meter's unit, or money."
    )
    notify = models.CharField(
        max_length=16, choices=Recipients.choices, default=Recipients.ALL_ADMINS
    )
    admins = models.ManyToManyField(Membership, blank=True, related_name="+")
    generation = models.PositiveIntegerField(default=1)
    quiet_period_start = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["threshold_type", "threshold", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(threshold__gt=0)
                & (
                    ~models.Q(threshold_type__in=["percentage", "forecast"])
                    | models.Q(threshold__lte=100)
                ),
                name="organization_alert_threshold_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(meter__isnull=True) | models.Q(threshold_type="absolute"),
                name="organization_alert_meter_absolute",
            ),
            models.UniqueConstraint(
                fields=["plan_alert", "organization"],
                condition=models.Q(plan_alert__isnull=False),
                name="organization_alert_one_copy_per_plan_alert",
            ),
        ]

    def __str__(self) -> str:
        if self.threshold_type in MONEY_THRESHOLD_TYPES:
            what = self.get_threshold_type_display().lower()
            amount = f"{self.threshold.normalize():f} {self.organization.currency}"
            return f"{self.organization}: {what} alert at {amount}"
        unit = "%" if self.threshold_type in PERCENT_THRESHOLD_TYPES else " credits"
        forecast = "forecast " if self.threshold_type == ThresholdType.FORECAST else ""
        return f"{self.organization}: {forecast}alert at {self.threshold.normalize():f}{unit}"

    @property
    def source(self) -> str:
        if self.plan_alert_id is None:
            return AlertSource.ORGANIZATION
        return AlertSource.PLAN_OVERRIDE if self.overridden else AlertSource.PLAN

    def firing_key(self, period: Period) -> str:
        """The dedupe key of its firing in `period`, at its current arming."""
        return f"alert:{self.pk}:{period.start.isoformat()}:{self.generation}"


class UserAlertPolicy(models.Model):
    """Per-user credit usage alerts of an organization (one per organization).

    `quiet_period_start`: saved with fire_if_already_exceeded=False, the
    members already past the threshold in that period are not told; those
    who cross it later in the period are (a crossing fires as it happens).
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="user_alert_policy"
    )
    enabled = models.BooleanField(default=False)
    threshold = credits_field(null=True, blank=True)
    notify_user = models.BooleanField(default=False)
    admins = models.ManyToManyField(Membership, blank=True, related_name="+")
    generation = models.PositiveIntegerField(default=1)
    quiet_period_start = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "user alert policies"

    def __str__(self) -> str:
        return f"Per-user alerts of {self.organization}"


MAX_BALANCE_ALERTS = 10


class BalanceAlertType(models.TextChoices):
    DEPLETED = "depleted", "Depleted"
    DROPPED = "dropped", "Dropped below"
    RECOVERED = "recovered", "Recovered"


class BalanceAlertStatus(models.TextChoices):
    ARMED = "armed", "Armed"
    IN_ALARM = "in_alarm", "In alarm"


class BalanceAlert(models.Model):
    """An alert on the organization's credit balance (SPEC §9).

    One state machine for the three types: `armed` until the balance meets
    the alert's condition (0 for `depleted`, below `threshold` for
    `dropped`, above 0 for `recovered`), when it fires once and is
    `in_alarm`; the balance leaving the condition re-arms it. `fired`
    counts its firings: the dedupe key of the next one.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="balance_alerts"
    )
    type = models.CharField(max_length=16, choices=BalanceAlertType.choices)
    threshold = credits_field(null=True, blank=True)
    notify = models.CharField(
        max_length=16, choices=Recipients.choices, default=Recipients.ALL_ADMINS
    )
    admins = models.ManyToManyField(Membership, blank=True, related_name="+")
    status = models.CharField(
        max_length=16, choices=BalanceAlertStatus.choices, default=BalanceAlertStatus.ARMED
    )
    triggered_at = models.DateTimeField(null=True, blank=True)
    fired = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["type", "threshold", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(type="dropped") & models.Q(threshold__gt=0))
                | (~models.Q(type="dropped") & models.Q(threshold__isnull=True)),
                name="balance_alert_threshold_only_when_dropped",
            )
        ]

    def __str__(self) -> str:
        if self.type == BalanceAlertType.DROPPED and self.threshold is not None:
            return f"{self.organization}: balance below {format_credits(self.threshold)}"
        return f"{self.organization}: balance {self.type}"


class FiringKind(models.TextChoices):
    ORGANIZATION_ALERT = "organization_alert", "Organization alert"
    USER_ALERT = "user_alert", "User alert"
    USER_LIMIT = "user_limit", "User limit reached"
    BALANCE_DEPLETED = "balance_depleted", "Balance depleted"
    BALANCE_DROPPED = "balance_dropped", "Balance dropped"
    BALANCE_RECOVERED = "balance_recovered", "Balance recovered"


BALANCE_FIRING_KINDS = {
    BalanceAlertType.DEPLETED: FiringKind.BALANCE_DEPLETED,
    BalanceAlertType.DROPPED: FiringKind.BALANCE_DROPPED,
    BalanceAlertType.RECOVERED: FiringKind.BALANCE_RECOVERED,
}


class Firing(models.Model):
    """An alert that fired: the history. `dedupe_key` is unique per
    organization, which is what makes a firing impossible to record twice.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=24, choices=FiringKind.choices)
    alert = models.ForeignKey(
        OrganizationAlert, on_delete=models.SET_NULL, null=True, blank=True, related_name="firings"
    )
    balance_alert = models.ForeignKey(
        BalanceAlert, on_delete=models.SET_NULL, null=True, blank=True, related_name="firings"
    )
    membership = models.ForeignKey(
        Membership, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    user_external_id = models.CharField(max_length=255, blank=True)
    meter = models.CharField(max_length=64, default=CREDITS_METER)
    threshold_type = models.CharField(max_length=16, choices=ThresholdType.choices, blank=True)
    threshold = credits_field(help_text="As configured: a percent for percentage alerts.")
    threshold_credits = money_field(
        help_text="The threshold in what the alert watches: credits, or money (money alerts)."
    )
    value = money_field(help_text="Usage when it fired; spend or invoice total for money alerts.")
    # A forecast alert (SPEC §15): the usage projected at the period's end,
    # and when the threshold is reached at this pace.
    projected = credits_field(null=True, blank=True)
    projected_at = models.DateTimeField(null=True, blank=True)
    currency = models.CharField(
        max_length=3, blank=True, help_text="For money alerts: the currency of the amounts."
    )
    allowance = credits_field(null=True, blank=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    triggered_at = models.DateTimeField(default=timezone.now)
    dedupe_key = models.CharField(max_length=200)

    class Meta:
        ordering = ["-triggered_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "dedupe_key"], name="firing_once")
        ]
        indexes = [models.Index(fields=["organization", "-id"], name="firing_org_newest")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {format_credits(self.threshold_credits)}"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"
    # To a URL of a platform alert (staff's), signed with PLATFORM_WEBHOOK_SECRET.
    PLATFORM_WEBHOOK = "platform_webhook", "Platform webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """The outbox: one message to one recipient over one channel, written in
    the same transaction as the firings it reports, delivered by a worker.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    group_key = models.CharField(max_length=64, help_text="The evaluation that produced it.")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    recipient = models.CharField(max_length=320, help_text="Email address, or webhook endpoint id.")
    event_type = models.CharField(max_length=32)
    firings = models.ManyToManyField(Firing, related_name="notifications")
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["group_key", "channel", "recipient"], name="notification_once_per_recipient"
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="notification_unfinished",
                condition=models.Q(status__in=["pending", "sending"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}: {self.status}"


class DeliveryAttempt(models.Model):
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    succeeded = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{'ok' if self.succeeded else 'failed'} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class WebhookEndpoint(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=128)
    events = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return self.url


EVENT_TYPES = {
    FiringKind.ORGANIZATION_ALERT: "alert.triggered",
    FiringKind.USER_ALERT: "user_alert.triggered",
    FiringKind.USER_LIMIT: "user_limit.reached",
    FiringKind.BALANCE_DEPLETED: "credit_balance.depleted",
    FiringKind.BALANCE_DROPPED: "credit_balance.dropped",
    FiringKind.BALANCE_RECOVERED: "credit_balance.recovered",
}

# Events that are not firings of an alert: written to the outbox directly.
CREDIT_GRANT_CREATED = "credit_grant.created"
CREDIT_GRANT_EXPIRING = "credit_grant.expiring"
TOP_UP_LIMIT_REACHED = "credit_balance.top_up_limit_reached"
INVOICE_CREATED = "invoice.created"
LIMIT_REQUEST_CREATED = "limit_request.created"
LIMIT_REQUEST_APPROVED = "limit_request.approved"
LIMIT_REQUEST_DENIED = "limit_request.denied"
CREDIT_EVENT_TYPES = (
    CREDIT_GRANT_CREATED,
    CREDIT_GRANT_EXPIRING,
    TOP_UP_LIMIT_REACHED,
    INVOICE_CREATED,
    LIMIT_REQUEST_CREATED,
    LIMIT_REQUEST_APPROVED,
    LIMIT_REQUEST_DENIED,
)


from alerts.request_models import LimitRequest, LimitRequestStatus  # noqa: E402, F401
