"""The Django admin of billing: the ledger, its totals and the per-user limits.

The ledger (usage events, consume answers) is read-only: no add, change or
delete. The totals are kept by the ledger's writes: read-only too, and
deleted only along with the member or organization they belong to. Edits of
the limits policy and of custom limits go through the services, on their own
pages and in the inlines of the organization page alike, so that members over
a new limit are marked and the limit-reached alerts fire.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.models import Membership, Organization
from accounts.selectors import validate_admins
from alerts.services.changes import custom_limit_delete, custom_limit_set, limit_policy_update
from billing import meter_admin  # noqa: F401  (registers the meters' admin)
from billing.models import (
    EXCLUDABLE_SOURCES,
    ConsumeAnswer,
    CreditHold,
    CustomLimit,
    DailyUsage,
    MemberUsage,
    OrganizationUsage,
    SourceUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.selectors import current_period_start
from config.admin_kit import (
    INLINE_ROWS_MAX,
    AddPageFieldsMixin,
    DeletedWithOwnerAdmin,
    LookupListFilter,
    ReadOnlyAdmin,
    RelatedChoicesMixin,
    SavedThroughServicesFormSet,
    SavedThroughServicesMixin,
    ServiceValidatedForm,
    inline_on,
    json_display,
    null_filter,
)
from config.admin_site import CreditsAdminMixin, CreditsInput
from config.credits import (
    CREDIT_DECIMAL_PLACES,
    CREDIT_MAX_DIGITS,
    CREDIT_QUANTUM,
    format_credits,
)


class MembershipChoicesMixin(RelatedChoicesMixin):
    """A member is labelled with its user and organization: fetched with it."""

    choices_select_related = {Membership: ("user", "organization")}


class CurrentPeriodFilter(admin.SimpleListFilter):
    """Totals of each organization's current period, or of earlier ones."""

    title = "period"
    parameter_name = "period"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("current", "This period"), ("earlier", "Earlier periods")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        this_period = current_period_start("organization__")
        if self.value() == "current":
            return queryset.filter(period_start=this_period)
        if self.value() == "earlier":
            return queryset.filter(period_start__lt=this_period)
        return queryset


class MemberColumnMixin:
    """The `user` column: the external id of the row's member."""

    @admin.display(description="user", ordering="membership__external_id")
    def user(self, row: Any) -> str | None:
        # None: usage reported without a user.
        membership: Membership | None = row.membership
        return membership.external_id if membership is not None else None


# The ledger: read-only


@admin.register(UsageEvent)
class UsageEventAdmin(MemberColumnMixin, ReadOnlyAdmin):
    """The ledger: never added, changed or deleted by hand. Searches are exact,
    and there is no date hierarchy, so that the table's size does not matter.
    """

    list_display = (
        "timestamp",
        "organization",
        "user",
        "credits",
        "source",
        "idempotency_key",
    )
    list_filter = ("source", ("timestamp", admin.DateFieldListFilter))
    list_select_related = ("organization", "membership")
    search_fields = ("=organization__slug", "=idempotency_key", "=membership__external_id")
    search_help_text = "An organization's slug, an idempotency key or a user's external id."
    show_full_result_count = False
    fields = (
        "organization",
        "membership",
        "meter",
        "credits",
        "source",
        "timestamp",
        "period_start",
        "idempotency_key",
        "fingerprint",
        "formatted_properties",
        "recorded_at",
    )
    readonly_fields = fields

    formatted_properties = json_display("properties")


class ConsumeOutcomeFilter(LookupListFilter):
    title = "outcome"
    parameter_name = "outcome"
    options = [
        ("allowed", "Allowed", {"status_code__lt": 400}),
        ("refused", "Refused", {"status_code__gte": 400}),
    ]


@admin.register(ConsumeAnswer)
class ConsumeAnswerAdmin(ReadOnlyAdmin):
    """What a repeated consume (or hold) key is answered: part of the ledger."""

    list_display = ("idempotency_key", "organization", "status_code", "created_at")
    list_filter = (ConsumeOutcomeFilter, ("created_at", admin.DateFieldListFilter))
    list_select_related = ("organization",)
    search_fields = ("=organization__slug", "=idempotency_key")
    search_help_text = "An organization's slug or an idempotency key."
    show_full_result_count = False
    fields = (
        "organization",
        "idempotency_key",
        "fingerprint",
        "status_code",
        "formatted_body",
        "created_at",
    )
    readonly_fields = fields

    formatted_body = json_display("body")


@admin.register(CreditHold)
class CreditHoldAdmin(MemberColumnMixin, ReadOnlyAdmin):
    """Holds (SPEC §13): made, settled and released through the API or a host
    view only, so that their credits leave the held totals exactly once.
    """

    list_display = ("created_at", "organization", "user", "credits", "status", "expires_at")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("organization", "membership")
    search_fields = ("=organization__slug", "=idempotency_key", "=membership__external_id")
    search_help_text = "An organization's slug, an idempotency key or a user's external id."
    show_full_result_count = False
    fields = (
        "organization",
        "membership",
        "credits",
        "source",
        "counted",
        "period_start",
        "status",
        "expires_at",
        "settled_credits",
        "idempotency_key",
        "created_at",
        "closed_at",
    )
    readonly_fields = fields


# The totals: read-only, deleted only with their member or organization


@admin.register(OrganizationUsage)
class OrganizationUsageAdmin(DeletedWithOwnerAdmin):
    list_display = ("organization", "period_start", "used", "held")
    list_filter = (CurrentPeriodFilter,)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    ordering = ("-period_start", "organization__name")


LimitReachedFilter = null_filter(
    "limit_reached_at", "limit reached", "limit_reached", yes="Yes", no="No", null="no"
)


@admin.register(MemberUsage)
class MemberUsageAdmin(MemberColumnMixin, DeletedWithOwnerAdmin):
    list_display = (
        "user",
        "organization",
        "period_start",
        "used",
        "counted",
        "held",
        "limit_reached_at",
    )
    list_filter = (CurrentPeriodFilter, LimitReachedFilter)
    list_select_related = ("organization", "membership")
    search_fields = ("organization__slug", "membership__external_id", "membership__user__email")
    ordering = ("-period_start", "-used")


@admin.register(SourceUsage)
class SourceUsageAdmin(MemberColumnMixin, DeletedWithOwnerAdmin):
    list_display = ("organization", "user", "source", "period_start", "used")
    list_filter = (CurrentPeriodFilter, "source")
    list_select_related = ("organization", "membership")
    search_fields = ("organization__slug", "membership__external_id")
    ordering = ("-period_start", "-used")


@admin.register(DailyUsage)
class DailyUsageAdmin(DeletedWithOwnerAdmin):
    list_display = ("organization", "day", "used")
    list_filter = (("day", admin.DateFieldListFilter),)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    ordering = ("-day", "organization__name")


# Per-user limits: written through the services


def _credits_form_field(**kwargs: Any) -> forms.DecimalField:
    return forms.DecimalField(
        max_digits=CREDIT_MAX_DIGITS,
        decimal_places=CREDIT_DECIMAL_PLACES,
        min_value=CREDIT_QUANTUM,
        required=False,
        widget=CreditsInput,
        **kwargs,
    )


class UserLimitPolicyAdminForm(ServiceValidatedForm):
    validated_fields = ("admins",)

    default_limit = _credits_form_field(
        help_text="Credits per member per billing period. Empty: no limit."
    )
    excluded_sources = forms.MultipleChoiceField(
        choices=[(source.value, source.label) for source in EXCLUDABLE_SOURCES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Sources that do not count toward per-user limits.",
    )

    class Meta:
        model = UserLimitPolicy
        fields = ("organization", "enabled", "default_limit", "excluded_sources", "admins")

    def validate(self, organization: Organization, data: dict[str, Any]) -> None:
        validate_admins(organization=organization, admins=list(data["admins"]))


def _limit_policy_save(organization: Organization, data: dict[str, Any]) -> UserLimitPolicy:
    return limit_policy_update(
        organization=organization,
        enabled=data["enabled"],
        default_limit=data["default_limit"],
        clear_default_limit=data["default_limit"] is None,
        admins=list(data.get("admins") or []),
        excluded_sources=data["excluded_sources"],
    )


@admin.register(UserLimitPolicy)
class UserLimitPolicyAdmin(
    SavedThroughServicesMixin,
    AddPageFieldsMixin,
    CreditsAdminMixin,
    MembershipChoicesMixin,
    admin.ModelAdmin,
):
    """Deleting a policy is left to Django: without limits nobody can become
    over budget, so there is nothing to evaluate.
    """

    form = UserLimitPolicyAdminForm
    list_display = ("organization", "enabled", "default_limit_display", "excluded", "updated_at")
    list_filter = ("enabled",)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    autocomplete_fields = ("organization", "admins")
    add_fields = UserLimitPolicyAdminForm.Meta.fields
    fields = (*add_fields, "updated_at")
    readonly_fields = ("organization", "updated_at")

    @admin.display(description="default limit", ordering="default_limit")
    def default_limit_display(self, policy: UserLimitPolicy) -> str | None:
        return None if policy.default_limit is None else format_credits(policy.default_limit)

    @admin.display(description="excluded sources")
    def excluded(self, policy: UserLimitPolicy) -> str:
        return ", ".join(policy.excluded_sources)

    def save_row(self, obj: UserLimitPolicy, data: dict[str, Any], change: bool) -> UserLimitPolicy:
        return _limit_policy_save(obj.organization, data)


class MembershipLabel(forms.Widget):
    """The member of an existing custom limit: shown, not chosen again."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        return format_html("{}", self.label)


class CustomLimitAdminForm(ServiceValidatedForm):
    validated_fields = ("membership",)

    limit = _credits_form_field(help_text="Credits per billing period. Empty: unlimited.")

    class Meta:
        model = CustomLimit
        fields = ("organization", "membership", "limit")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        membership = self.fields.get("membership")
        if membership is not None and self.instance.pk is not None:
            # A custom limit stays with its member (remove it and add another
            # to move it); shown without a picker, and without a query per row.
            membership.disabled = True
            membership.widget = MembershipLabel(str(self.instance.membership))

    def validate(self, organization: Organization, data: dict[str, Any]) -> None:
        # The service sets the limit of the member it is given.
        membership = data["membership"]
        if membership.organization_id != organization.pk:
            self.add_error(
                "membership", f"{membership.external_id!r} is not a member of this organization."
            )


UnlimitedFilter = null_filter(
    "limit", "limit", "unlimited", yes="Unlimited", no="A number of credits", null="yes"
)


@admin.register(CustomLimit)
class CustomLimitAdmin(
    MemberColumnMixin,
    SavedThroughServicesMixin,
    AddPageFieldsMixin,
    CreditsAdminMixin,
    MembershipChoicesMixin,
    admin.ModelAdmin,
):
    form = CustomLimitAdminForm
    list_display = ("user", "organization", "limit_display", "updated_at")
    list_filter = (UnlimitedFilter,)
    # Each row's checkbox is labelled with the row, which names the member's user.
    list_select_related = ("organization", "membership__user", "membership__organization")
    search_fields = ("organization__slug", "membership__external_id", "membership__user__email")
    autocomplete_fields = ("organization", "membership")
    add_fields = CustomLimitAdminForm.Meta.fields
    fields = (*add_fields, "updated_at")
    readonly_fields = ("organization", "membership", "updated_at")

    @admin.display(description="limit", ordering="limit")
    def limit_display(self, custom: CustomLimit) -> str:
        return "unlimited" if custom.limit is None else format_credits(custom.limit)

    def save_row(self, obj: CustomLimit, data: dict[str, Any], change: bool) -> CustomLimit:
        return custom_limit_set(
            organization=obj.organization, membership=obj.membership, limit=data["limit"]
        )

    def delete_model(self, request: HttpRequest, obj: CustomLimit) -> None:
        custom_limit_delete(custom_limit=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CustomLimit]) -> None:
        for custom in queryset.select_related("organization"):
            custom_limit_delete(custom_limit=custom)


# Inlines of the organization page


class UserLimitPolicyFormSet(SavedThroughServicesFormSet):
    instance: Organization

    def create_row(self, data: dict[str, Any]) -> UserLimitPolicy:
        return _limit_policy_save(self.instance, data)

    def update_row(self, row: UserLimitPolicy, data: dict[str, Any]) -> UserLimitPolicy:
        return _limit_policy_save(self.instance, data)


@inline_on(Organization)
class UserLimitPolicyInline(CreditsAdminMixin, MembershipChoicesMixin, admin.StackedInline):
    model = UserLimitPolicy
    form = UserLimitPolicyAdminForm
    formset = UserLimitPolicyFormSet
    fields = ("enabled", "default_limit", "excluded_sources", "admins")
    autocomplete_fields = ("admins",)
    verbose_name = "per-user credit limits"
    verbose_name_plural = "per-user credit limits"
    can_delete = False
    max_num = 1
    extra = 1

    def get_queryset(self, request: HttpRequest) -> QuerySet[UserLimitPolicy]:
        return super().get_queryset(request).select_related("organization")


class CustomLimitFormSet(SavedThroughServicesFormSet):
    """At most INLINE_ROWS_MAX of them (all are on their own page); saved
    through the services.
    """

    instance: Organization

    @classmethod
    def get_default_prefix(cls) -> str:
        return "custom_limits"  # the relation has no name to make one from

    def get_queryset(self) -> QuerySet[CustomLimit]:
        if not hasattr(self, "_queryset"):
            self._queryset = super().get_queryset()[:INLINE_ROWS_MAX]
        return self._queryset

    def create_row(self, data: dict[str, Any]) -> CustomLimit:
        return custom_limit_set(
            organization=self.instance, membership=data["membership"], limit=data["limit"]
        )

    def update_row(self, row: CustomLimit, data: dict[str, Any]) -> CustomLimit:
        return custom_limit_set(
            organization=self.instance, membership=row.membership, limit=data["limit"]
        )

    def delete_row(self, row: CustomLimit) -> None:
        custom_limit_delete(custom_limit=row)


@inline_on(Organization)
class CustomLimitInline(CreditsAdminMixin, MembershipChoicesMixin, admin.TabularInline):
    model = CustomLimit
    form = CustomLimitAdminForm
    formset = CustomLimitFormSet
    fields = ("membership", "limit", "updated_at")
    readonly_fields = ("updated_at",)
    autocomplete_fields = ("membership",)
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[CustomLimit]:
        return (
            super()
            .get_queryset(request)
            .select_related("organization", "membership__user", "membership__organization")
            .order_by("membership__external_id")
        )
