"""The Django admin of the credit balance (SPEC §9): grants, their ledger,
auto top-ups, balance alerts and the balance checks.

Staff issue grants (promotional credits, an adjustment) on the grant's add
page and void them with an action, both through `alerts.services.credits`,
never by a model save: the `grant` ledger entry, the balance alerts, the
auto top-up and the `credit_grant.created` webhook happen as they do for a
grant made over the API. A grant is never edited in place afterwards, and
its ledger is read-only. The rest is shown, not edited: an organization's
admins set their balance alerts and auto top-up themselves.

Registered from alerts/admin.py. It lives in `alerts`, not beside billing's
admin, because it calls alerts' services and a billing module may not
import alerts (docs/architecture.md).
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.models import Organization
from alerts.models import BalanceAlert
from alerts.services.credits import credit_grant_create, credit_grant_void
from billing.models import (
    AUTO_TOP_UP_SETTINGS,
    AutoTopUp,
    BalanceCheck,
    CreditGrant,
    CreditLedgerEntry,
    GrantKind,
    GrantStatus,
)
from billing.services.grants import GrantInput, grant_replayed, grant_validate
from config.admin_kit import (
    INLINE_ROWS_MAX,
    AddPageFieldsMixin,
    DeletedWithOwnerAdmin,
    ReadOnlyMixin,
    ServiceValidatedForm,
    copy_into,
)
from config.admin_site import CreditsAdminMixin, CreditsInput
from config.credits import CREDIT_DECIMAL_PLACES, CREDIT_MAX_DIGITS, CREDIT_QUANTUM
from config.errors import Conflict

# Grants


def _status_lookups(now: Any) -> dict[str, Q]:
    """Each status as a filter, the same rules as `CreditGrant.status_at`."""
    live = Q(voided_at__isnull=True, effective_at__lte=now)
    unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    return {
        GrantStatus.PENDING: Q(voided_at__isnull=True, effective_at__gt=now),
        GrantStatus.ACTIVE: live & unexpired & Q(remaining__gt=0),
        GrantStatus.DEPLETED: live & unexpired & Q(remaining=0),
        GrantStatus.EXPIRED: live & Q(expires_at__lte=now),
        GrantStatus.VOIDED: Q(voided_at__isnull=False),
    }


class GrantStatusFilter(admin.SimpleListFilter):
    """The status as of now: it changes with time, not only with writes."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(GrantStatus.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        lookup = _status_lookups(timezone.now()).get(self.value() or "")
        return queryset if lookup is None else queryset.filter(lookup)


class CreditGrantIssueForm(ServiceValidatedForm):
    """Issue credits to an organization: checked by the service's own rules,
    and sent once however often the page is submitted (the key is made when
    the page is shown, so a second click gets the first grant back).
    """

    validated_fields = (
        "kind",
        "credits",
        "priority",
        "effective_at",
        "expires_at",
        "note",
        "issue_key",
    )

    kind = forms.ChoiceField(choices=GrantKind.choices, initial=GrantKind.PROMOTIONAL)
    credits = forms.DecimalField(
        max_digits=CREDIT_MAX_DIGITS,
        decimal_places=CREDIT_DECIMAL_PLACES,
        min_value=CREDIT_QUANTUM,
        widget=CreditsInput,
    )
    effective_at = forms.SplitDateTimeField(
        required=False,
        widget=admin.widgets.AdminSplitDateTime,
        help_text="Empty: now. Before then the grant is pending and not counted.",
    )
    issue_key = forms.CharField(widget=forms.HiddenInput, max_length=100)

    class Meta:
        model = CreditGrant
        fields = (
            "organization",
            "kind",
            "credits",
            "priority",
            "effective_at",
            "expires_at",
            "note",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["issue_key"].initial = f"admin-{uuid.uuid4().hex}"

    def grant_input(self) -> GrantInput:
        data = self.cleaned_data
        return GrantInput(
            kind=data["kind"],
            credits=data["credits"],
            priority=data["priority"],
            effective_at=data["effective_at"],
            expires_at=data["expires_at"],
            note=data.get("note") or "",
            idempotency_key=data["issue_key"],
        )

    def validate(self, organization: Organization, data: dict[str, Any]) -> None:
        grant = self.grant_input()
        now = timezone.now()
        grant_validate(grant, now=now)
        try:
            grant_replayed(organization=organization, grant=grant, now=now)
        except Conflict:
            self.add_error(
                None,
                "This page already issued a grant with other values: "
                "open the page again to issue another.",
            )


@admin.action(
    description="Void selected grants (their remaining credits to 0)", permissions=["void"]
)
def void_grants(
    model_admin: CreditGrantAdmin, request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    voided = already = 0
    for grant in queryset.select_related("organization").order_by("pk"):
        if grant.voided_at is not None:
            already += 1
            continue
        credit_grant_void(organization=grant.organization, grant_id=grant.pk)
        voided += 1
    message = f"Voided {voided} grant(s)."
    if already:
        message += f" {already} already voided: left as they were."
    model_admin.message_user(request, message, messages.SUCCESS)


class LedgerEntryFormSet(BaseInlineFormSet):
    """The newest INLINE_ROWS_MAX entries of the grant (a grant drawn by many
    writes has an entry each); the grant's page links to all of them.
    """

    def get_queryset(self) -> QuerySet[CreditLedgerEntry]:
        if not hasattr(self, "_queryset"):
            self._queryset = super().get_queryset()[:INLINE_ROWS_MAX]
        return self._queryset


class CreditLedgerEntryInline(ReadOnlyMixin, CreditsAdminMixin, admin.TabularInline):
    model = CreditLedgerEntry
    formset = LedgerEntryFormSet
    fields = ("at", "type", "credits")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = f"ledger entries (the newest {INLINE_ROWS_MAX})"


# Shown on a grant's page, as the service wrote them.
GRANT_FIELDS = (
    "organization",
    "kind",
    "credits",
    "remaining",
    "status",
    "priority",
    "effective_at",
    "expires_at",
    "note",
    "created_at",
    "voided_at",
    "expired_at",
    "expiry_notice_sent_at",
    "idempotency_key",
    "ledger",
)


@admin.register(CreditGrant)
class CreditGrantAdmin(AddPageFieldsMixin, DeletedWithOwnerAdmin):
    """Issued through the service on the add page; afterwards read-only, and
    voided by the action. Deleted only with the organization.
    """

    form = CreditGrantIssueForm
    list_display = (
        "id",
        "organization",
        "kind",
        "credits",
        "remaining",
        "status",
        "effective_at",
        "expires_at",
    )
    list_display_links = ("id", "organization")
    list_filter = ("kind", GrantStatusFilter)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    search_help_text = "An organization's slug or name."
    autocomplete_fields = ("organization",)
    actions = (void_grants,)
    add_fields = (*CreditGrantIssueForm.Meta.fields, "issue_key")
    fields = GRANT_FIELDS
    readonly_fields = GRANT_FIELDS
    inlines = (CreditLedgerEntryInline,)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return admin.ModelAdmin.has_add_permission(self, request)

    def has_void_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_creditgrant")

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return list(self.inlines) if obj is not None else []

    @admin.display(description="status")
    def status(self, grant: CreditGrant) -> str:
        return GrantStatus(grant.status).label

    @admin.display(description="ledger")
    def ledger(self, grant: CreditGrant) -> str:
        url = reverse("admin:billing_creditledgerentry_changelist")
        return format_html('<a href="{}?grant__id__exact={}">All its entries</a>', url, grant.pk)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().add_view(
            request, form_url, {"title": "Issue credits", **(extra_context or {})}
        )

    def save_model(self, request: HttpRequest, obj: CreditGrant, form: Any, change: bool) -> None:
        created = credit_grant_create(
            organization=form.cleaned_data["organization"], grant=form.grant_input()
        )
        copy_into(obj, created.grant)
        if created.replayed:
            self.message_user(
                request,
                "This page had already issued the grant: it was not issued again.",
                messages.WARNING,
            )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the service wrote everything


# The ledger


@admin.register(CreditLedgerEntry)
class CreditLedgerEntryAdmin(DeletedWithOwnerAdmin):
    list_display = ("at", "organization", "grant_link", "type", "credits")
    list_filter = ("type", ("at", admin.DateFieldListFilter))
    list_select_related = ("organization", "grant")
    search_fields = ("=organization__slug", "=grant__id")
    search_help_text = "An organization's slug or a grant's id."
    show_full_result_count = False
    fields = ("organization", "grant", "type", "credits", "at")
    readonly_fields = fields

    @admin.display(description="grant", ordering="grant_id")
    def grant_link(self, entry: CreditLedgerEntry) -> str:
        url = reverse("admin:billing_creditgrant_change", args=[entry.grant_id])
        return format_html('<a href="{}">#{} {}</a>', url, entry.grant_id, entry.grant)


# Set by the organization's admins: shown to staff


@admin.register(AutoTopUp)
class AutoTopUpAdmin(DeletedWithOwnerAdmin):
    list_display = ("organization", *AUTO_TOP_UP_SETTINGS, "top_ups", "period_start")
    list_filter = ("enabled",)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")


@admin.register(BalanceAlert)
class BalanceAlertAdmin(DeletedWithOwnerAdmin):
    list_display = (
        "organization",
        "type",
        "threshold",
        "notify",
        "status",
        "triggered_at",
        "fired",
    )
    list_filter = ("type", "status", "notify")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    fields = (
        "organization",
        "type",
        "threshold",
        "notify",
        "admins",
        "status",
        "triggered_at",
        "fired",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields


@admin.register(BalanceCheck)
class BalanceCheckAdmin(DeletedWithOwnerAdmin):
    """When the periodic job next looks at an organization's balance."""

    list_display = ("organization", "due_at")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    ordering = ("due_at",)
