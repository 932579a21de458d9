from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Q, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from accounts.forms import AdminUserChangeForm, AdminUserCreationForm, MembershipAdminForm
from accounts.models import ApiKey, AuditEvent, Membership, Organization, Plan, Role, User
from accounts.services import api_key_create, api_key_revoke
from alerts.models import OrganizationAlert, PlanAlert
from alerts.services.changes import organization_update, plan_update
from alerts.services.invoicing import invoice_schedule_ensure
from alerts.services.plan_alerts import inherited_alerts_sync, plan_lock_shared
from alerts.services.rules import alerts_evaluate_organization
from billing.models import CustomLimit, UserLimitPolicy
from billing.selectors import current_period, organizations_with_usage_this_period
from config.admin_kit import (
    INLINE_ROWS_MAX,
    AddPageFieldsMixin,
    DeletedWithOwnerAdmin,
    InlinesOnPageMixin,
    SecretShownOnceMixin,
    copy_into,
    json_display,
    null_filter,
)
from config.admin_site import CreditsAdminMixin
from config.credits import format_credits, percent_of


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = AdminUserChangeForm
    add_form = AdminUserCreationForm
    list_display = ("email", "name", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("last_login", "date_joined")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("name",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


def _admin_url(view: str, **params: Any) -> str:
    return reverse(f"admin:{view}") + ("?" + urlencode(params) if params else "")


AllowanceFilter = null_filter(
    "own_credit_allowance", "credit allowance", "allowance", set="Set", none="None", null="none"
)


@admin.register(Organization)
class OrganizationAdmin(
    InlinesOnPageMixin, AddPageFieldsMixin, CreditsAdminMixin, admin.ModelAdmin
):
    """An organization with its alerts and limits, edited through the services.

    Members are not inlined (an organization can have thousands, more than a
    form can post): the page links to them instead.
    """

    list_display = (
        "slug",
        "name",
        "own_credit_allowance",
        "usage_this_period",
        "anchor_day",
        "block_when_exhausted",
        "plan",
    )
    list_filter = ("block_when_exhausted", AllowanceFilter, "plan", "anchor_day")
    list_select_related = ("plan",)
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}
    add_fields = (
        "name",
        "slug",
        "plan",
        "own_credit_allowance",
        "block_when_exhausted",
        "anchor_day",
        "own_credit_price",
        "currency",
    )
    readonly_fields = ("this_period", "usage_this_period", "members", "records")
    fields = (*add_fields, *readonly_fields)
    # Inlines of the alerts' and billing's admins (`inline_on(Organization)`).
    inline_models = (OrganizationAlert, UserLimitPolicy, CustomLimit)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        # The current period depends on each organization's anchor day: its
        # usage comes in the same query as the organizations, however many.
        return organizations_with_usage_this_period(super().get_queryset(request))

    @admin.display(description="usage this period", ordering="usage_this_period")
    def usage_this_period(self, organization: Organization) -> str:
        used: Decimal = organization.usage_this_period  # type: ignore[attr-defined]
        allowance = organization.credit_allowance
        if not allowance:
            return format_credits(used)
        return f"{format_credits(used)} ({percent_of(used, allowance)}%)"

    @admin.display(description="current period")
    def this_period(self, organization: Organization) -> str:
        period = current_period(organization)
        return f"{period.start:%Y-%m-%d} to {period.end:%Y-%m-%d} (UTC)"

    @admin.display(description="members")
    def members(self, organization: Organization) -> str:
        counts = Membership.objects.filter(organization=organization).aggregate(
            total=Count("pk"), admins=Count("pk", filter=Q(role=Role.ADMIN))
        )
        return format_html(
            '<a href="{}">{} member{}, {} admin{}</a> · <a href="{}">Add a member</a>',
            _admin_url("accounts_membership_changelist", organization__id__exact=organization.pk),
            counts["total"],
            pluralize(counts["total"]),
            counts["admins"],
            pluralize(counts["admins"]),
            _admin_url("accounts_membership_add", organization=organization.pk),
        )

    @admin.display(description="records")
    def records(self, organization: Organization) -> str:
        custom_limits = CustomLimit.objects.filter(organization=organization).count()
        shown = f" (the first {INLINE_ROWS_MAX} below)" if custom_limits > INLINE_ROWS_MAX else ""
        links = [
            ("billing_customlimit_changelist", f"Custom limits: {custom_limits}{shown}"),
            ("billing_memberusage_changelist", "Usage by member"),
            ("billing_usageevent_changelist", "Usage events"),
            ("billing_creditgrant_changelist", "Credit grants"),
            ("alerts_firing_changelist", "Alert history"),
            ("alerts_notification_changelist", "Notifications"),
            ("alerts_webhookendpoint_changelist", "Webhook endpoints"),
            ("accounts_apikey_changelist", "API keys"),
        ]
        return format_html_join(
            " · ",
            '<a href="{}">{}</a>',
            (
                (_admin_url(view, organization__id__exact=organization.pk), label)
                for view, label in links
            ),
        )

    def save_model(
        self, request: HttpRequest, obj: Organization, form: ModelForm, change: bool
    ) -> None:
        if not change:
            if obj.plan_id is not None:
                plan_lock_shared([obj.plan_id])
            super().save_model(request, obj, form, change)
            inherited_alerts_sync(organization=obj)
            invoice_schedule_ensure(organization=obj)
            return
        # Through the service the API uses: the anchor day moves without
        # touching the period under way, and a new allowance or period
        # re-evaluates the alerts, in one transaction. It compares with the
        # organization as stored (`obj` already holds the form's values).
        data = form.cleaned_data
        stored = Organization.objects.get(pk=obj.pk)
        organization_update(
            organization=stored,
            slug=data["slug"],
            name=data["name"],
            credit_allowance=data["own_credit_allowance"],
            clear_allowance=data["own_credit_allowance"] is None,
            plan=data["plan"],
            clear_plan=data["plan"] is None,
            anchor_day=data["anchor_day"],
            block_when_exhausted=data["block_when_exhausted"],
            credit_price=data["own_credit_price"],
            clear_price=data["own_credit_price"] is None,
            currency=data["currency"],
        )
        copy_into(obj, stored)


@admin.register(Plan)
class PlanAdmin(InlinesOnPageMixin, CreditsAdminMixin, admin.ModelAdmin):
    """Plans (SPEC §12): an organization on one uses its values where it sets
    none of its own, and has the plan's alerts. The key is fixed once
    created (API clients name it).
    """

    inline_models = (PlanAlert,)

    list_display = (
        "key",
        "name",
        "credit_allowance",
        "default_limit",
        "credit_price",
        "organization_count",
    )
    search_fields = ("key", "name")
    fields = ("key", "name", "credit_allowance", "default_limit", "credit_price", "created_at")
    readonly_fields = ("created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plan]:
        return super().get_queryset(request).annotate(organization_count=Count("organizations"))

    def get_readonly_fields(self, request: HttpRequest, obj: Plan | None = None) -> Any:
        return ("key", *self.readonly_fields) if obj is not None else self.readonly_fields

    @admin.display(description="organizations", ordering="organization_count")
    def organization_count(self, plan: Plan) -> int:
        return plan.organization_count  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: Plan, form: ModelForm, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Through the service: organizations using a value that moved have
        # their alerts evaluated (off the request).
        data = form.cleaned_data
        stored = Plan.objects.get(pk=obj.pk)
        plan_update(
            plan=stored,
            name=data["name"],
            credit_allowance=data["credit_allowance"],
            default_limit=data["default_limit"],
            credit_price=data["credit_price"],
        )
        copy_into(obj, stored)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        for refusal in getattr(formset, "refusals", ()):
            messages.error(request, f"Not saved: {refusal}")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    form = MembershipAdminForm
    list_display = ("user", "member_name", "organization", "role", "external_id")
    list_filter = ("role", "organization")
    search_fields = ("user__email", "name", "user__name", "external_id", "organization__slug")
    autocomplete_fields = ("user", "organization")
    readonly_fields = ("created_at",)
    ordering = ("user__email", "pk")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        # A member is labelled with its user and organization, in pickers too.
        return super().get_queryset(request).select_related("user", "organization")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Membership], search_term: str
    ) -> tuple[QuerySet[Membership], bool]:
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        match = request.resolver_match
        # Every "admins" picker chooses admins: offer only those.
        picks_admins = request.GET.get("field_name") == "admins"
        if match is not None and match.url_name == "autocomplete" and picks_admins:
            queryset = queryset.filter(role=Role.ADMIN)
        return queryset, may_have_duplicates

    def save_model(
        self, request: HttpRequest, obj: Membership, form: ModelForm, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if change and "role" in form.changed_data:
            alerts_evaluate_organization(organization=obj.organization)


ApiKeyStatusFilter = null_filter(
    "revoked_at", "status", "status", active="Active", revoked="Revoked", null="active"
)


@admin.register(ApiKey)
class ApiKeyAdmin(SecretShownOnceMixin, AddPageFieldsMixin, admin.ModelAdmin):
    """Keys are made by the service, which shows the raw key once; the hash is never shown."""

    list_display = ("prefix", "organization", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = (ApiKeyStatusFilter, "organization")
    list_select_related = ("organization",)
    search_fields = ("prefix", "name", "organization__slug", "organization__name")
    autocomplete_fields = ("organization",)
    actions = ("revoke_selected",)
    add_fields = ("organization", "name")
    fields = ("organization", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("organization", "prefix", "created_at", "last_used_at", "revoked_at")
    secret_is = "The new API key is"

    def create_with_secret(self, obj: ApiKey) -> tuple[ApiKey, str]:
        return api_key_create(organization=obj.organization, name=obj.name)

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        for api_key in keys:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(DeletedWithOwnerAdmin):
    """The audit trail of alerts, limits policies and custom limits: read-only,
    and like the totals deleted only along with its organization.
    """

    # The target's type and id in one column: the list fits a 1280 px screen.
    list_display = ("created_at", "organization", "actor", "action", "target")
    list_filter = ("action", "target_type", "created_at")
    search_fields = ("organization__slug", "organization__name", "actor", "target_id")
    list_select_related = ("organization",)
    fields = (
        "created_at",
        "organization",
        "actor",
        "actor_user",
        "actor_api_key",
        "action",
        "target_type",
        "target_id",
        "before_json",
        "after_json",
    )
    readonly_fields = fields

    @admin.display(description="target", ordering="target_type")
    def target(self, event: AuditEvent) -> str:
        return f"{event.target_type} {event.target_id}".strip()

    before_json = json_display("before")
    after_json = json_display("after")
