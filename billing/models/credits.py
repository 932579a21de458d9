"""The credit balance (SPEC §9): grants, their ledger, what time and top-ups do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from config.credits import credits_field, format_credits


class GrantKind(models.TextChoices):
    PURCHASED = "purchased", "Purchased"
    PROMOTIONAL = "promotional", "Promotional"
    TOP_UP = "top_up", "Top-up"
    ADJUSTMENT = "adjustment", "Adjustment"


class GrantStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    DEPLETED = "depleted", "Depleted"
    EXPIRED = "expired", "Expired"
    VOIDED = "voided", "Voided"


GRANT_PRIORITY_DEFAULT = 50
GRANT_PRIORITY_MIN, GRANT_PRIORITY_MAX = 1, 100


class CreditGrant(models.Model):
    """Credits an organization may spend beyond its period allowance (SPEC §9).

    `remaining` is only ever changed together with a ledger entry, so that
    the entries of a grant always sum to it. Whether a grant counts is a
    matter of time (`effective_at` <= now < `expires_at`), never of a job
    having run: `expired_at` only records that the expiry was written to the
    ledger.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=GrantKind.choices)
    credits = credits_field()
    remaining = credits_field()
    priority = models.PositiveSmallIntegerField(
        default=GRANT_PRIORITY_DEFAULT, help_text="1-100; lower is drawn first."
    )
    effective_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")
    note = models.CharField(max_length=500, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(
        null=True, blank=True, help_text="When its expiry was written to the ledger."
    )
    expiry_notice_sent_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="credit_grant_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(credits__gt=0), name="credit_grant_credits_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(remaining__gte=0, remaining__lte=models.F("credits")),
                name="credit_grant_remaining_within_credits",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    priority__gte=GRANT_PRIORITY_MIN, priority__lte=GRANT_PRIORITY_MAX
                ),
                name="credit_grant_priority_1_to_100",
            ),
            models.CheckConstraint(
                condition=models.Q(expires_at__isnull=True)
                | models.Q(expires_at__gt=models.F("effective_at")),
                name="credit_grant_expires_after_effective",
            ),
        ]
        indexes = [
            models.Index(
                fields=["organization", "priority", "expires_at", "created_at", "id"],
                name="credit_grant_drawdown_order",
                condition=models.Q(voided_at__isnull=True, remaining__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} grant of {format_credits(self.credits)} credits"

    def status_at(self, now: datetime) -> str:
        if self.voided_at is not None:
            return GrantStatus.VOIDED
        if self.effective_at > now:
            return GrantStatus.PENDING
        if self.expires_at is not None and self.expires_at <= now:
            return GrantStatus.EXPIRED
        if self.remaining == 0:
            return GrantStatus.DEPLETED
        return GrantStatus.ACTIVE

    @property
    def status(self) -> str:
        return self.status_at(timezone.now())


class LedgerEntryType(models.TextChoices):
    GRANT = "grant", "Grant"
    DRAWDOWN = "drawdown", "Drawdown"
    EXPIRY = "expiry", "Expiry"
    VOID = "void", "Void"


class CreditLedgerEntry(models.Model):
    """One movement of a grant's credits: + for `grant`, - for the others.
    A drawdown entry may cover one whole write (a batch).
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    grant = models.ForeignKey(CreditGrant, on_delete=models.CASCADE, related_name="entries")
    type = models.CharField(max_length=16, choices=LedgerEntryType.choices)
    credits = credits_field()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "credit ledger entries"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["organization", "-id"], name="credit_ledger_org_newest")]

    def __str__(self) -> str:
        return f"{self.type} {format_credits(self.credits)}"


class BalanceCheck(models.Model):
    """When an organization's credit balance next changes with time alone: a
    grant becoming effective or expiring, an expiry notice due, a new
    period's allowance. The periodic job reads only the rows that are due
    (by the index on `due_at`), never every organization.
    """

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="+")
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.organization}: next balance check at {self.due_at}"


class AutoTopUp(models.Model):
    """A `top_up` grant made when a write takes the balance below `threshold`
    (one per organization). `top_ups` counts those of the period that
    starts at `period_start`.
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="auto_top_up"
    )
    enabled = models.BooleanField(default=False)
    threshold = credits_field(null=True, blank=True)
    credits = credits_field(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(default=GRANT_PRIORITY_DEFAULT)
    expires_after_days = models.PositiveIntegerField(null=True, blank=True)
    max_per_period = models.PositiveIntegerField(default=3)
    period_start = models.DateTimeField(null=True, blank=True)
    top_ups = models.PositiveIntegerField(default=0)
    limit_noticed_period_start = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(enabled=False) | models.Q(threshold__gt=0, credits__gt=0),
                name="auto_top_up_enabled_complete",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    priority__gte=GRANT_PRIORITY_MIN, priority__lte=GRANT_PRIORITY_MAX
                ),
                name="auto_top_up_priority_1_to_100",
            ),
        ]

    def __str__(self) -> str:
        return f"Auto top-up of {self.organization}"

    def settings(self) -> dict[str, Any]:
        """What an admin sets, by name (the API's object, the form's initial values)."""
        return {name: getattr(self, name) for name in AUTO_TOP_UP_SETTINGS}


AUTO_TOP_UP_SETTINGS = (
    "enabled",
    "threshold",
    "credits",
    "priority",
    "expires_after_days",
    "max_per_period",
)
