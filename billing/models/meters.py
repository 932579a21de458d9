"""Meters (SPEC §10): what the platform counts besides credits, and the
running totals that make every aggregation exact without reading the raw
events (billing/meters.py keeps them).
"""

from __future__ import annotations

from django.core.validators import validate_slug
from django.db import models
from django.utils import timezone

from accounts.models import Membership, Organization
from config.credits import credits_field, format_credits

CREDITS_METER = "credits"
MAX_DISTINCT_VALUE_LENGTH = 1000


class Aggregation(models.TextChoices):
    SUM = "sum", "Sum of quantities"
    COUNT = "count", "Count of events"
    MAX = "max", "Largest quantity"
    UNIQUE_COUNT = "unique_count", "Distinct values of a property"


# Aggregations whose per-day values make a chart (a day's distinct values are
# not kept: docs/meters.md).
DAILY_AGGREGATIONS = (Aggregation.SUM, Aggregation.COUNT, Aggregation.MAX)


class Meter(models.Model):
    """A meter the platform defines for every organization. `credits` is
    built in and is not a row. The aggregation and property are fixed once
    created: the running totals were kept by them.
    """

    key = models.CharField(
        max_length=64,
        unique=True,
        validators=[validate_slug],
        help_text="Letters, digits, hyphens and underscores; what usage events name.",
    )
    name = models.CharField(max_length=100)
    unit = models.CharField(max_length=32)
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    property = models.CharField(
        max_length=64,
        blank=True,
        help_text="For unique_count: the event property whose distinct values are counted.",
    )
    credits_per_unit = credits_field(
        null=True,
        blank=True,
        help_text="Credits an event costs per unit of quantity when it gives none. Empty: none.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(key=CREDITS_METER), name="meter_key_not_credits"
            ),
            models.CheckConstraint(
                condition=(models.Q(aggregation="unique_count") & ~models.Q(property=""))
                | (~models.Q(aggregation="unique_count") & models.Q(property="")),
                name="meter_property_only_for_unique_count",
            ),
            models.CheckConstraint(
                condition=models.Q(credits_per_unit__isnull=True)
                | models.Q(credits_per_unit__gte=0),
                name="meter_credits_per_unit_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"


class MeterUsage(models.Model):
    """A meter's value in one period, for the organization (`member_key` 0)
    or one member (`member_key` = the membership id, kept when the member is
    removed, as SourceUsage does). `aggregation` is the meter's, so that the
    upsert knows how to combine; `previous_value` is the value before the
    last write, so that a write sees what it crossed even for `max`.
    """

    # No index of their own: the unique key starts with the organization, and a
    # meter is deleted only while nothing refers to it (PROTECT's check may scan).
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="+", db_index=False)
    membership = models.ForeignKey(
        Membership, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    member_key = models.PositiveBigIntegerField(default=0)
    period_start = models.DateTimeField()
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    value = credits_field(default=0)
    previous_value = credits_field(default=0)

    class Meta:
        verbose_name_plural = "meter usage"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "meter", "period_start", "member_key"],
                name="meter_usage_one_per_member_period",
            )
        ]

    def __str__(self) -> str:
        return f"{self.meter_id} from {self.period_start:%Y-%m-%d}: {format_credits(self.value)}"


class MeterDailyUsage(models.Model):
    """An organization's value of a meter on one day (UTC), for its chart:
    sum, count and max only.
    """

    # No index of their own: the unique key starts with the organization, and a
    # meter is deleted only while nothing refers to it (PROTECT's check may scan).
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="+", db_index=False)
    day = models.DateField()
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    value = credits_field(default=0)

    class Meta:
        verbose_name_plural = "meter daily usage"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "meter", "day"], name="meter_daily_usage_one_per_day"
            )
        ]

    def __str__(self) -> str:
        return f"{self.meter_id} on {self.day:%Y-%m-%d}: {format_credits(self.value)}"


class MeterDistinctValue(models.Model):
    """A value of a unique_count meter's property seen in a period, for the
    organization (`member_key` 0) or one member. The unique key is what makes
    the count exact: only the write that inserts a value counts it.
    """

    # No index of their own: the unique key starts with the organization, and a
    # meter is deleted only while nothing refers to it (PROTECT's check may scan).
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="+", db_index=False)
    period_start = models.DateTimeField()
    member_key = models.PositiveBigIntegerField(default=0)
    value = models.CharField(max_length=MAX_DISTINCT_VALUE_LENGTH)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "meter", "period_start", "member_key", "value"],
                name="meter_distinct_value_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.meter_id}: {self.value}"
