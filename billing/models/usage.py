from __future__ import annotations

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
    quantity = credits_field(
        null=True, blank=True, help_text="For a meter other than credits: its quantity."
    )
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
            # An event of another meter may cost nothing (SPEC §10).
            models.CheckConstraint(
                condition=models.Q(credits__gt=0)
                | (models.Q(credits=0) & ~models.Q(meter=DEFAULT_METER)),
                name="usage_event_credits_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(quantity__isnull=True) | models.Q(quantity__gte=0),
                name="usage_event_quantity_not_negative",
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
    """An organization's credits used in one billing period; what its grants
    covered of them (`drawn`, moved by the drawdown's own statement), and what
    of its overage was invoiced (`invoiced` credits, up to `invoiced_through`).
    The current period's row is the lock of the organization's balance.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    used = credits_field(default=0)
    drawn = credits_field(db_default=0, help_text="Credits of this period that grants covered.")
    held = credits_field(db_default=0, help_text="Credits held for work not yet priced (SPEC §13).")
    invoiced = credits_field(db_default=0, help_text="Credits of its overage invoiced so far.")
    invoiced_through = models.DateTimeField(
        null=True, blank=True, help_text="Where the last invoice's covered span ended."
    )

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
    held = credits_field(
        db_default=0, help_text="Credits held for work not yet priced, toward the limit."
    )
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
