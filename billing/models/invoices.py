"""Threshold invoicing (SPEC §11): the billing threshold, the invoices, and
when each organization's period is next closed.

An invoice is for credits of one period's overage at the price of the
moment it is made: `amount` = `credits` x price, exact (config/money.py).
What of a period is invoiced is kept on its total row
(`OrganizationUsage.invoiced`, `invoiced_through`), moved in the invoice's
transaction under that row's lock, which is the lock of the organization's
balance (docs/money.md).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from config.credits import credits_field
from config.money import money_field


class BillingThreshold(models.Model):
    """One per organization: invoice the period's overage each time its
    uninvoiced part reaches `amount` (Stripe's billing threshold).
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="billing_threshold"
    )
    enabled = models.BooleanField(default=False)
    amount = credits_field(null=True, blank=True, help_text="In the organization's currency.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__isnull=True) | models.Q(amount__gt=0),
                name="billing_threshold_amount_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(enabled=False) | models.Q(amount__isnull=False),
                name="billing_threshold_enabled_has_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"Billing threshold of {self.organization}"


class InvoiceReason(models.TextChoices):
    THRESHOLD = "threshold", "Threshold"
    PERIOD_END = "period_end", "Period end"


class Invoice(models.Model):
    """Credits of one period's overage, invoiced. Never changed once made.

    `covered_from`/`covered_through`: the usage recorded in that span (the
    previous invoice of the period, or its start, to this one); the
    invoices of a period tile it without overlap.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=16, choices=InvoiceReason.choices)
    period_start = models.DateTimeField()
    covered_from = models.DateTimeField()
    covered_through = models.DateTimeField()
    credits = credits_field()
    amount = money_field()
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The period's closing invoice is made once, however many beat
            # processes or workers run it.
            models.UniqueConstraint(
                fields=["organization", "period_start"],
                condition=models.Q(reason="period_end"),
                name="invoice_one_period_end",
            ),
            models.CheckConstraint(condition=models.Q(credits__gt=0), name="invoice_credits"),
            models.CheckConstraint(
                condition=models.Q(covered_through__gte=models.F("covered_from")),
                name="invoice_covered_in_order",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-id"], name="invoice_org_newest"),
            models.Index(fields=["organization", "period_start"], name="invoice_org_period"),
        ]

    def __str__(self) -> str:
        return f"{self.get_reason_display()} invoice {self.pk} of {self.organization}"


class InvoiceSchedule(models.Model):
    """When an organization with a price next has a period to close: the
    beat task reads only the rows that are due (by the index on `due_at`).
    """

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField(help_text="The period to close at `due_at`.")
    due_at = models.DateTimeField(db_index=True, help_text="That period's end.")

    def __str__(self) -> str:
        return f"{self.organization}: close the period at {self.due_at}"
