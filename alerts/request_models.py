"""Limit-increase requests (SPEC §14): a member at their cap asks for more
credits; an admin approves (raising the member's custom limit, for good or
for this billing period only) or denies. Imported by alerts.models.
"""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from accounts.models import Membership, Organization
from config.credits import CREDIT_QUANTUM, credits_field

MAX_REASON_LENGTH = 1000


class LimitRequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"


class LimitRequest(models.Model):
    """One member's request for `credits` more. At most one pending per
    member (a unique index). Approved `this_period_only`, the member's limit
    returns to `limit_before` (None: the default, no custom limit; see
    `had_custom_limit`) at `revert_at`, the end of the period it was
    approved in, unless an admin changed it from `limit_after` meanwhile;
    `reverted_at` once done.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    membership = models.ForeignKey(
        Membership, on_delete=models.CASCADE, related_name="limit_requests"
    )
    credits = credits_field(validators=[MinValueValidator(CREDIT_QUANTUM)])
    reason = models.TextField(max_length=MAX_REASON_LENGTH, blank=True)
    status = models.CharField(
        max_length=16, choices=LimitRequestStatus.choices, default=LimitRequestStatus.PENDING
    )
    approved_credits = credits_field(null=True, blank=True)
    this_period_only = models.BooleanField(default=False)
    answer = models.TextField(max_length=MAX_REASON_LENGTH, blank=True)
    resolved_by = models.ForeignKey(
        Membership, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_by_label = models.CharField(max_length=255, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    had_custom_limit = models.BooleanField(default=False)
    limit_before = credits_field(null=True, blank=True)
    limit_after = credits_field(null=True, blank=True)
    revert_at = models.DateTimeField(null=True, blank=True)
    reverted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["membership"],
                condition=models.Q(status="pending"),
                name="limit_request_one_pending_per_member",
            ),
            models.CheckConstraint(
                condition=models.Q(credits__gt=0), name="limit_request_credits_positive"
            ),
        ]
        indexes = [
            models.Index(
                fields=["revert_at"],
                condition=models.Q(revert_at__isnull=False, reverted_at__isnull=True),
                name="limit_request_to_revert",
            )
        ]

    def __str__(self) -> str:
        return f"{self.membership}: {self.credits.normalize():f} credits more ({self.status})"
