from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.utils import timezone

from accounts.models import Membership, Organization
from config.credits import CREDIT_QUANTUM, credits_field, format_credits

DEFAULT_METER = "credits"


class Source(models.TextChoices):
    ASSISTANT = "assistant", "Assistant"
    AGENT = "agent", "Agent"
    AGENT_EXTERNAL = "agent_external", "Agent (external deployment)"
    WORKFLOW = "workflow", "Workflow"
    API = "api", "API"


# Sources an organization may exclude from per-user limits.
EXCLUDABLE_SOURCES = (Source.AGENT_EXTERNAL, Source.WORKFLOW)


class UsageEvent(models.Model):
    """One row of the ledger: credits spent, by whom, when. Never updated."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    membership = models.ForeignKey(
        Membership, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    meter = models.CharField(max_length=64, default=DEFAULT_METER)
    credits = credits_field()
    source = models.CharField(max_length=32, choices=Source.choices, default=Source.ASSISTANT)
    timestamp = models.DateTimeField()
    period_start = models.DateTimeField(help_text="Start of the billing period it counts toward.")
    idempotency_key = models.CharField(max_length=255)
    fingerprint = models.CharField(
        max_length=64, help_text="Digest of the request, to tell a retry from a reused key."
    )
    properties = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                name="usage_event_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(credits__gt=0), name="usage_event_credits_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "period_start"], name="usage_event_org_period")
        ]

    def __str__(self) -> str:
        return f"{format_credits(self.credits)} {self.meter} ({self.source}) {self.idempotency_key}"


class ConsumeAnswer(models.Model):
    """The first answer to a keyed consume, replayed when the key comes again.

    A refused consume records no usage, so its answer lives only here.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    idempotency_key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="consume_answer_key_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key}: {self.status_code}"


class OrganizationUsage(models.Model):
    """An organization's credits used in one billing period."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    used = credits_field(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start"], name="organization_usage_one_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization} from {self.period_start:%Y-%m-%d}: {format_credits(self.used)}"


class MemberUsage(models.Model):
    """A member's credits in one period: all of them (`used`) and those that
    count toward their limit (`counted`: minus the excluded sources).
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    used = credits_field(default=0)
    counted = credits_field(default=0)
    limit_reached_at = models.DateTimeField(
        null=True, blank=True, help_text="When counted usage first reached the limit this period."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["membership", "period_start"], name="member_usage_one_per_period"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "period_start"], name="member_usage_org_period")
        ]

    def __str__(self) -> str:
        return f"{self.membership} from {self.period_start:%Y-%m-%d}: {format_credits(self.used)}"


class SourceUsage(models.Model):
    """Credits per source in one period, per member (membership NULL: usage
    reported without a user, or by a member since removed). Sums of these
    give usage by source and let counted usage be recomputed when the
    excluded sources change.

    `member_key` is the membership id, or 0 without one: unlike a NULL it
    makes the row's key unique in every database, so that the upsert's
    conflict target works on SQLite too. A removed member's rows keep theirs
    (ids are never reused), so they stay apart from every other row.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    # Removing a member keeps their usage in the per-source figures, as the
    # ledger keeps their events (SPEC §16): only the link to them goes.
    membership = models.ForeignKey(
        Membership, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    member_key = models.PositiveBigIntegerField(default=0)
    period_start = models.DateTimeField()
    source = models.CharField(max_length=32, choices=Source.choices)
    used = credits_field(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "member_key", "period_start", "source"],
                name="source_usage_one_per_member_period_source",
            )
        ]

    def __str__(self) -> str:
        return f"{self.source} from {self.period_start:%Y-%m-%d}: {format_credits(self.used)}"


class DailyUsage(models.Model):
    """An organization's credits used on one day (UTC), for the usage chart.

    Kept like the other totals, in the same statement path, so that the chart
    never scans the raw events. A UTC day lies within one billing period:
    periods start at 00:00 UTC.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    day = models.DateField(help_text="The day (UTC) the usage happened.")
    used = credits_field(default=0)

    class Meta:
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(fields=["organization", "day"], name="daily_usage_one_per_day")
        ]

    def __str__(self) -> str:
        return f"{self.organization} on {self.day:%Y-%m-%d}: {format_credits(self.used)}"


class UserLimitPolicy(models.Model):
    """The per-user limits of an organization (one per organization)."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="user_limit_policy"
    )
    enabled = models.BooleanField(default=False)
    default_limit = credits_field(
        null=True, blank=True, help_text="Credits per member per billing period. Empty: no limit."
    )
    excluded_sources = models.JSONField(
        default=list, blank=True, help_text="Sources that do not count toward per-user limits."
    )
    admins = models.ManyToManyField(
        Membership,
        blank=True,
        related_name="+",
        help_text="Admins emailed when a member reaches their limit.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "user limit policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(default_limit__isnull=True)
                | models.Q(default_limit__gte=CREDIT_QUANTUM),
                name="user_limit_policy_default_positive",
            )
        ]

    def __str__(self) -> str:
        return f"Per-user limits of {self.organization}"


class CustomLimit(models.Model):
    """One member's limit, overriding the default. `limit` NULL: unlimited."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    membership = models.OneToOneField(
        Membership, on_delete=models.CASCADE, related_name="custom_limit"
    )
    limit = credits_field(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(limit__isnull=True) | models.Q(limit__gte=CREDIT_QUANTUM),
                name="custom_limit_positive",
            )
        ]

    def __str__(self) -> str:
        limit = "unlimited" if self.limit is None else format_credits(self.limit)
        return f"{self.membership}: {limit}"


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
