"""The Django admin of threshold invoicing (SPEC §11): invoices, billing
thresholds and when each organization's period is next closed. Shown, not
edited: invoices are made by usage and the period's end, and an
organization's admins set their billing threshold themselves.

Registered from alerts/admin.py, beside the credit balance's admin.
"""

from __future__ import annotations

from django.contrib import admin

from billing.models import BillingThreshold, Invoice, InvoiceSchedule
from config.admin_kit import DeletedWithOwnerAdmin


@admin.register(Invoice)
class InvoiceAdmin(DeletedWithOwnerAdmin):
    list_display = (
        "id",
        "created_at",
        "organization",
        "reason",
        "period_start",
        "covered_from",
        "covered_through",
        "credits",
        "amount",
        "currency",
    )
    list_filter = ("reason", "currency", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("organization",)
    search_fields = ("=organization__slug", "=id")
    search_help_text = "An organization's slug or an invoice's id."
    show_full_result_count = False
    fields = (
        "organization",
        "reason",
        "period_start",
        "covered_from",
        "covered_through",
        "credits",
        "amount",
        "currency",
        "created_at",
    )
    readonly_fields = fields


@admin.register(BillingThreshold)
class BillingThresholdAdmin(DeletedWithOwnerAdmin):
    list_display = ("organization", "enabled", "amount", "updated_at")
    list_filter = ("enabled",)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    fields = ("organization", "enabled", "amount", "updated_at")
    readonly_fields = fields


@admin.register(InvoiceSchedule)
class InvoiceScheduleAdmin(DeletedWithOwnerAdmin):
    """When the beat task next closes an organization's period."""

    list_display = ("organization", "period_start", "due_at")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    ordering = ("due_at",)
