"""Holds (SPEC §13): credits set aside for work priced afterwards."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

from accounts.models import Membership, Organization
from billing.models.usage import Source
from config.credits import credits_field, format_credits

HOLD_EXPIRES_IN_DEFAULT = 900  # seconds
HOLD_EXPIRES_IN_MAX = 86_400


class HoldStatus(models.TextChoices):
    HELD = "held", "Held"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class CreditHold(models.Model):
    """Credits held for one member until the work is priced.

    While `held`, its `credits` are in the `held` totals of its period's rows
    (`MemberUsage` when `counted`, i.e. its source counts toward the member's
    limit; `OrganizationUsage` always), which the gate adds to usage. It
    leaves them exactly once: the first of settle, release and expiry to
    change `status` from `held` (a conditional UPDATE) takes them back.
    From `expires_at` on the gate counts it no more even while `status` still
    says `held`: the next write of the organization expires it first
    (billing/holds.py). The member may be removed: the hold stays, unnamed.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    membership = models.ForeignKey(
        Membership, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    credits = credits_field()
    source = models.CharField(max_length=32, choices=Source.choices)
    counted = models.BooleanField(help_text="Whether it counts toward the member's limit.")
    period_start = models.DateTimeField(help_text="The billing period whose totals hold it.")
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.HELD)
    expires_at = models.DateTimeField()
    settled_credits = credits_field(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="credit_hold_key_unique"
            ),
            models.CheckConstraint(condition=models.Q(credits__gt=0), name="credit_hold_positive"),
            models.CheckConstraint(
                condition=models.Q(settled_credits__isnull=True) | models.Q(settled_credits__gte=0),
                name="credit_hold_settled_not_negative",
            ),
        ]
        indexes = [
            # The holds a write must expire first, and the beat's sweep.
            models.Index(
                fields=["organization", "expires_at"],
                name="credit_hold_open_expiry",
                condition=models.Q(status="held"),
            ),
            models.Index(fields=["organization", "created_at"], name="credit_hold_org_created"),
        ]

    def __str__(self) -> str:
        return f"{format_credits(self.credits)} held ({self.status})"

    def status_at(self, now: datetime) -> str:
        """Its status as the gate sees it: a hold past `expires_at` is expired
        even before a write or the beat has written so.
        """
        if self.status == HoldStatus.HELD and self.expires_at <= now:
            return HoldStatus.EXPIRED
        return self.status
