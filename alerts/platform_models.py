"""Platform alerts (SPEC §12): the operator's own alerts across customers,
made by staff in the Django admin ("tell sales when a self-serve customer
outgrows its plan"), and their firings, once per organization per period.

Apart from alerts/models.py, which would pass 500 lines with them; that
module imports these, so that Django registers them with the alerts app.
docs/platform-alerts.md says when they fire and what they send.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import Organization, Plan
from config.credits import credits_field, format_credits


class PlatformThresholdType(models.TextChoices):
    PERCENTAGE = "percentage", "Percentage of the allowance"
    ABSOLUTE = "absolute", "Absolute credits"
    BALANCE_DEPLETED = "balance_depleted", "Balance depleted"


class PlatformAlert(models.Model):
    """Fires once per organization per billing period, for every organization
    in its scope (all, or those on `plan`), when the organization's usage
    first reaches `threshold` (a percent of its allowance in force, or
    credits) or its credit balance reaches 0 (`balance_depleted`). Tells
    `emails` and posts a signed `platform_alert.triggered` to `webhook_urls`.

    `revision` goes up on every save that can find organizations already past
    the alert; the backfill (alerts/services/platform_config.py) records in
    `settled_revision` the one it did, so that a lost task is redone.
    """

    name = models.CharField(max_length=200)
    # PROTECT: a plan that platform alerts watch is not deleted from under them.
    plan = models.ForeignKey(
        Plan,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="platform_alerts",
        help_text="Empty: every organization. Else only organizations on this plan.",
    )
    threshold_type = models.CharField(max_length=16, choices=PlatformThresholdType.choices)
    threshold = credits_field(
        null=True,
        blank=True,
        help_text="A percent (1-100) of the allowance, or credits. Empty for balance depleted.",
    )
    emails = models.JSONField(default=list, blank=True, help_text="Addresses told by email.")
    webhook_urls = models.JSONField(
        default=list, blank=True, help_text="URLs sent a signed platform_alert.triggered event."
    )
    enabled = models.BooleanField(default=True)
    revision = models.PositiveIntegerField(default=0, editable=False)
    settled_revision = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(threshold_type="balance_depleted") & models.Q(threshold__isnull=True)
                )
                | (models.Q(threshold_type="absolute") & models.Q(threshold__gt=0))
                | (
                    models.Q(threshold_type="percentage")
                    & models.Q(threshold__gt=0)
                    & models.Q(threshold__lte=100)
                ),
                name="platform_alert_threshold_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def describe(self) -> str:
        """What it watches, as a person says it: "80% of the allowance"."""
        if self.threshold_type == PlatformThresholdType.BALANCE_DEPLETED or self.threshold is None:
            return "credit balance depleted"
        if self.threshold_type == PlatformThresholdType.PERCENTAGE:
            return f"{format_credits(self.threshold)}% of the allowance"
        return f"{format_credits(self.threshold)} credits"


class PlatformFiring(models.Model):
    """A platform alert that fired for one organization in one period: its
    history. Unique per (alert, organization, period start): recorded by
    INSERT … ON CONFLICT DO NOTHING, so it can never be recorded twice.
    What it fired at is kept as it was (the alert may change since).
    """

    platform_alert = models.ForeignKey(
        PlatformAlert, on_delete=models.CASCADE, related_name="firings"
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    plan = models.ForeignKey(
        Plan,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The organization's plan when it fired.",
    )
    threshold_type = models.CharField(max_length=16, choices=PlatformThresholdType.choices)
    threshold = credits_field(null=True, blank=True, help_text="As configured, when it fired.")
    value = credits_field(help_text="The organization's usage this period when it fired.")
    allowance = credits_field(null=True, blank=True)
    balance = credits_field(null=True, blank=True, help_text="For balance depleted: the balance.")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    triggered_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-triggered_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform_alert", "organization", "period_start"],
                name="platform_firing_once_per_period",
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.platform_alert_id} for {self.organization_id} at {self.triggered_at:%Y-%m-%d}"
        )
