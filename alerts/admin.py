"""The Django admin of alerts: rules, the firing history, the outbox and webhooks.

Writes that can move an alert go through the services (a threshold edit
re-arms the alert and evaluates it at once), on an alert's own page and in
the alerts inline of the organization page alike; their forms are checked by
the services' own validators. The history and the delivery log are read-only;
the outbox can only be told to send again.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import ManyToManyField, QuerySet
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from accounts.models import Membership, Organization
from accounts.selectors import validate_admins
from alerts import (
    credit_admin,  # noqa: F401  (registers the credit balance's admin)
    invoice_admin,  # noqa: F401  (registers threshold invoicing's admin)
    plan_admin,  # noqa: F401  (registers the plans' alerts inline)
    platform_admin,  # noqa: F401  (registers platform alerts and their firings)
    webhook_admin,  # noqa: F401  (registers the webhook endpoints' admin)
)
from alerts.models import (
    MAX_ORGANIZATION_ALERTS,
    DeliveryAttempt,
    Firing,
    Notification,
    OrganizationAlert,
    UserAlertPolicy,
)
from alerts.outbox import notifications_resend
from alerts.services import configuration
from config.admin_kit import (
    AddPageFieldsMixin,
    ChosenLabelsAutocomplete,
    ReadOnlyAdmin,
    ReadOnlyMixin,
    RelatedChoicesMixin,
    SavedThroughServicesFormSet,
    SavedThroughServicesMixin,
    ServiceValidatedForm,
    inline_on,
    json_display,
)
from config.admin_site import CreditsAdminMixin

# The services refuse the alert past the cap; the forms say so before saving.
TOO_MANY_ALERTS = configuration.TOO_MANY_ALERTS


class MembershipChoicesMixin(RelatedChoicesMixin):
    """A member is labelled with its user and organization: fetched with it."""

    choices_select_related = {Membership: ("user", "organization")}


# Organization alerts


class OrganizationAlertAdminForm(ServiceValidatedForm):
    # In the organization's inline the formset counts the alerts it keeps instead.
    checks_alert_cap = True
    validated_fields = ("threshold_type", "threshold", "notify", "admins")

    fire_if_already_exceeded = forms.BooleanField(
        required=False,
        initial=True,
        help_text="If usage this period is already past the threshold, fire at once "
        "(else it waits for the next period).",
    )

    class Meta:
        model = OrganizationAlert
        fields = ("organization", "threshold_type", "threshold", "notify", "admins")

    def validate(self, organization: Organization, data: dict[str, Any]) -> None:
        configuration.validate_threshold(data["threshold_type"], data["threshold"])
        configuration.validate_meter_threshold(self.instance.meter, data["threshold_type"])
        configuration.validate_recipients(organization, data["notify"], list(data["admins"]))
        if (
            self.checks_alert_cap
            and self.instance.pk is None
            and organization.pk is not None
            and OrganizationAlert.objects.filter(
                organization=organization, meter__isnull=True
            ).count()
            >= MAX_ORGANIZATION_ALERTS
        ):
            raise ValidationError(TOO_MANY_ALERTS)


# Shown on an alert's page, never edited: the services keep them.
# `meter` too: alerts on a meter (SPEC §10) are made through the API; staff edit them here.
KEPT_BY_THE_SERVICES = (
    "meter",
    "plan_alert",
    "overridden",
    "enabled",
    "generation",
    "quiet_period_start",
    "created_at",
    "updated_at",
)


@admin.register(OrganizationAlert)
class OrganizationAlertAdmin(
    SavedThroughServicesMixin,
    AddPageFieldsMixin,
    CreditsAdminMixin,
    MembershipChoicesMixin,
    admin.ModelAdmin,
):
    form = OrganizationAlertAdminForm
    list_display = (
        "organization",
        "meter",
        "threshold_type",
        "threshold",
        "notify",
        "enabled",
        "source",
        "generation",
        "created_at",
    )
    list_filter = ("threshold_type", "notify", "enabled", "overridden")
    list_select_related = ("organization", "meter")
    search_fields = ("organization__slug", "organization__name")
    autocomplete_fields = ("organization", "admins")

    add_fields = (*OrganizationAlertAdminForm.Meta.fields, "fire_if_already_exceeded")
    fields = (*OrganizationAlertAdminForm.Meta.fields, *KEPT_BY_THE_SERVICES)
    readonly_fields = ("organization", *KEPT_BY_THE_SERVICES)

    def save_row(
        self, obj: OrganizationAlert, data: dict[str, Any], change: bool
    ) -> OrganizationAlert:
        if change:
            return _alert_update(OrganizationAlert.objects.get(pk=obj.pk), data)
        return _alert_create(data["organization"], data)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # One inherited from the plan is removed on the plan's page (SPEC §12).
        if obj is not None and obj.plan_alert_id is not None:
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: OrganizationAlert) -> None:
        configuration.alert_delete(alert=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[OrganizationAlert]) -> None:
        inherited = queryset.filter(plan_alert__isnull=False).count()
        for alert in queryset.filter(plan_alert__isnull=True):
            configuration.alert_delete(alert=alert)
        if inherited:
            messages.warning(
                request,
                f"{inherited} alert(s) inherited from a plan were kept: remove them on the "
                "plan's page, or turn them off.",
            )


def _alert_create(organization: Organization, data: dict[str, Any]) -> OrganizationAlert:
    """An alert from an admin form's data (the inline's has no choice to fire: it does)."""
    return configuration.alert_create(
        organization=organization,
        fire_if_already_exceeded=data.get("fire_if_already_exceeded", True),
        **_alert_settings(data),
    )


def _alert_update(alert: OrganizationAlert, data: dict[str, Any]) -> OrganizationAlert:
    return configuration.alert_update(alert=alert, **_alert_settings(data))


def _alert_settings(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "threshold_type": data["threshold_type"],
        "threshold": data["threshold"],
        "notify": data["notify"],
        "admins": list(data.get("admins") or []),
    }


class OrganizationAlertInlineForm(OrganizationAlertAdminForm):
    # New alerts of the inline fire at once when already passed, as by default.
    fire_if_already_exceeded = None  # type: ignore[assignment]
    checks_alert_cap = False


class OrganizationAlertFormSet(SavedThroughServicesFormSet):
    """The alerts of an organization, saved through the services: a new
    alert, a re-armed one or an organization past a threshold fires at once.
    """

    instance: Organization

    def clean(self) -> None:
        super().clean()
        kept = [
            form
            for form in self.forms
            if not getattr(form, "cleaned_data", {}).get(DELETION_FIELD_NAME)
            and (form.instance.pk is not None or form.has_changed())
            and form.instance.meter_id is None  # the cap is per meter; these are on credits
        ]
        if len(kept) > MAX_ORGANIZATION_ALERTS:
            raise ValidationError(TOO_MANY_ALERTS)
        for form in self.forms:
            deleting = getattr(form, "cleaned_data", {}).get(DELETION_FIELD_NAME)
            if deleting and form.instance.plan_alert_id is not None:
                raise ValidationError(
                    "An alert inherited from the plan cannot be deleted here: remove it on the "
                    "plan's page, or turn it off."
                )

    def create_row(self, data: dict[str, Any]) -> OrganizationAlert:
        return _alert_create(self.instance, data)

    def update_row(self, row: OrganizationAlert, data: dict[str, Any]) -> OrganizationAlert:
        # `row` already holds the form's values: the service compares with the stored ones.
        stored = OrganizationAlert.objects.select_related("organization").get(pk=row.pk)
        return _alert_update(stored, data)

    def delete_row(self, row: OrganizationAlert) -> None:
        configuration.alert_delete(alert=row)


@inline_on(Organization)
class OrganizationAlertInline(CreditsAdminMixin, MembershipChoicesMixin, admin.TabularInline):
    """The alerts on the organization's page; their history is on each alert's page."""

    model = OrganizationAlert
    form = OrganizationAlertInlineForm
    formset = OrganizationAlertFormSet
    fields = ("threshold_type", "threshold", "notify", "admins")
    autocomplete_fields = ("admins",)
    extra = 0
    max_num = MAX_ORGANIZATION_ALERTS
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrganizationAlert]:
        return (
            super().get_queryset(request).select_related("organization").prefetch_related("admins")
        )

    def formfield_for_manytomany(
        self, db_field: ManyToManyField[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        if db_field.name == "admins":
            kwargs["widget"] = ChosenLabelsAutocomplete(
                db_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_formset(
        self, request: HttpRequest, obj: Organization | None = None, **kwargs: Any
    ) -> type[BaseInlineFormSet[Any, Any, Any]]:
        formset = super().get_formset(request, obj, **kwargs)
        field = formset.form.base_fields.get("admins")
        picker = getattr(field.widget, "widget", None) if field is not None else None
        if obj is not None and isinstance(picker, ChosenLabelsAutocomplete):
            # The labels of every admin the organization's alerts name: one query.
            chosen = OrganizationAlert.admins.through.objects.filter(
                organizationalert__organization=obj
            ).values("membership_id")
            picker.labels = {
                str(membership.pk): str(membership)
                for membership in Membership.objects.select_related("user", "organization").filter(
                    pk__in=chosen
                )
            }
        return formset


# Per-user credit usage alerts


class UserAlertPolicyAdminForm(ServiceValidatedForm):
    validated_fields = ("threshold", "admins")

    class Meta:
        model = UserAlertPolicy
        fields = ("organization", "enabled", "threshold", "notify_user", "admins")

    def validate(self, organization: Organization, data: dict[str, Any]) -> None:
        with self.service_errors():
            configuration.validate_user_alert_threshold(
                enabled=bool(data.get("enabled")), threshold=data["threshold"]
            )
        admins = list(data["admins"])
        validate_admins(organization=organization, admins=admins)
        configuration.validate_user_alert_recipients(
            enabled=bool(data.get("enabled")),
            notify_user=bool(data.get("notify_user")),
            admins=admins,
        )


@admin.register(UserAlertPolicy)
class UserAlertPolicyAdmin(
    SavedThroughServicesMixin, CreditsAdminMixin, MembershipChoicesMixin, admin.ModelAdmin
):
    form = UserAlertPolicyAdminForm
    list_display = ("organization", "enabled", "threshold", "notify_user", "updated_at")
    list_filter = ("enabled", "notify_user")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    autocomplete_fields = ("organization", "admins")

    def get_readonly_fields(
        self, request: HttpRequest, obj: UserAlertPolicy | None = None
    ) -> list[str]:
        return ["organization", "generation", "updated_at"] if obj else []

    def save_row(self, obj: UserAlertPolicy, data: dict[str, Any], change: bool) -> UserAlertPolicy:
        return configuration.user_alert_policy_update(
            organization=obj.organization,
            enabled=data["enabled"],
            threshold=data["threshold"],
            clear_threshold=data["threshold"] is None,
            notify_user=data["notify_user"],
            admins=list(data.get("admins") or []),
        )


# Firing history


@admin.register(Firing)
class FiringAdmin(ReadOnlyAdmin):
    list_display = (
        "kind",
        "organization",
        "user_external_id",
        "threshold_credits",
        "value",
        "triggered_at",
    )
    list_filter = ("kind",)
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "user_external_id", "dedupe_key")
    date_hierarchy = "triggered_at"


# The outbox


class DeliveryAttemptInline(ReadOnlyMixin, admin.TabularInline):
    model = DeliveryAttempt
    fields = (
        "started_at",
        "finished_at",
        "succeeded",
        "response_status",
        "provider_message_id",
        "error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = (
        "channel",
        "recipient",
        "event_type",
        "organization",
        "status",
        "attempts",
        "created_at",
    )
    list_filter = ("status", "channel", "event_type")
    list_select_related = ("organization",)
    search_fields = ("recipient", "organization__slug")
    date_hierarchy = "created_at"
    fields = (
        "uid",
        "organization",
        "channel",
        "recipient",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "provider_message_id",
        "last_error",
        "created_at",
        "sent_at",
        "group_key",
        "firings",
        "formatted_payload",
    )
    readonly_fields = fields
    inlines = (DeliveryAttemptInline,)
    actions = ("resend_selected",)

    formatted_payload = json_display("payload")

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerts.change_notification")

    @admin.action(description="Resend selected notifications", permissions=["resend"])
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Send again, failed and sent ones included, with every attempt allowed again."""
        resent = notifications_resend(notification_ids=list(queryset.values_list("pk", flat=True)))
        message = f"Queued {resent.queued} notification(s) to be sent again."
        if resent.skipped:
            message += f" Skipped {resent.skipped} being sent right now."
        self.message_user(request, message, messages.SUCCESS)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "notification",
        "started_at",
        "succeeded",
        "response_status",
        "provider_message_id",
    )
    list_filter = ("succeeded",)
    list_select_related = ("notification",)
    search_fields = ("notification__recipient", "provider_message_id")
    date_hierarchy = "started_at"
