"""The Django admin of alerts: rules, the firing history, the outbox and webhooks.

Writes that can move an alert go through the services (a threshold edit
re-arms the alert and evaluates it at once), on an alert's own page and in
the alerts inline of the organization page alike; the history and the
delivery log are read-only; the outbox can only be told to send again.

Also the helpers the other apps' admins share: `ReadOnlyAdmin`,
`NullListFilter`, `pretty_json`, `MembershipChoicesMixin`, `as_form_error`,
`copy_into`, `saved_only_through_services`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import BaseModelAdmin
from django.contrib.admin.widgets import AutocompleteSelectMultiple
from django.core.exceptions import ValidationError
from django.db.models import ForeignKey, ManyToManyField, QuerySet
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html

from accounts.models import Membership, Organization
from accounts.selectors import validate_admins
from alerts.models import (
    MAX_ORGANIZATION_ALERTS,
    DeliveryAttempt,
    Firing,
    Notification,
    OrganizationAlert,
    UserAlertPolicy,
    WebhookEndpoint,
)
from alerts.outbox import notifications_resend
from alerts.services import configuration
from alerts.webhooks import (
    WEBHOOK_EVENT_TYPES,
    webhook_endpoint_create,
    webhook_events_validate,
    webhook_url_validate,
)
from config.admin_site import CreditsAdminMixin
from config.errors import InvalidInput


def as_form_error(error: InvalidInput, fields: Any) -> ValidationError:
    """A service's input error on the form field it names (else on the whole form)."""
    if error.field is not None and error.field in fields:
        return ValidationError({error.field: error.message})
    return ValidationError(error.message)


def copy_into(target: Any, source: Any) -> None:
    """The admin goes on with its own instance (log entry, redirect): make it the saved row."""
    for field in type(source)._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
    target._state.db = source._state.db


class ReadOnlyAdmin(CreditsAdminMixin, admin.ModelAdmin):
    """History and logs: seen, never edited by hand (credits shown as the product writes them)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NullListFilter(admin.SimpleListFilter):
    """A list filter on whether `field` is null. `options` are (value in the
    URL, label, whether that value means null), in the order shown.
    """

    field: str
    options: Sequence[tuple[str, str, bool]]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _ in self.options]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        for value, _, is_null in self.options:
            if self.value() == value:
                return queryset.filter(**{f"{self.field}__isnull": is_null})
        return queryset


def pretty_json(value: object) -> str:
    """A JSON value, indented, for a read-only field; "—" for none."""
    if value is None:
        return "—"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


if TYPE_CHECKING:
    _ModelAdminBase = BaseModelAdmin[Any]
else:
    _ModelAdminBase = BaseModelAdmin


class MembershipChoicesMixin(_ModelAdminBase):
    """A member is labelled with its user and organization: fetch them with the
    chosen members, so that a picker costs one query however many are chosen.
    """

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField | None:
        if db_field.related_model is Membership and "queryset" not in kwargs:
            kwargs["queryset"] = _memberships_with_labels()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: ManyToManyField[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        if db_field.related_model is Membership and "queryset" not in kwargs:
            kwargs["queryset"] = _memberships_with_labels()
        return super().formfield_for_manytomany(db_field, request, **kwargs)


def _memberships_with_labels() -> QuerySet[Membership]:
    return Membership.objects.select_related("user", "organization")


class ChosenLabelsAutocomplete(AutocompleteSelectMultiple):
    """An autocomplete whose chosen options are labelled from `labels` when it
    knows them all, so that the rows of an inline share one query for their
    labels instead of one each. Else (a form shown again with other choices)
    it asks the database, as Django's does.
    """

    labels: dict[str, str] | None = None

    def optgroups(self, name: str, value: Any, attrs: Any = None) -> Any:
        chosen = [str(v) for v in value if str(v) not in self.choices.field.empty_values]
        if self.labels is None or not set(chosen) <= self.labels.keys():
            return super().optgroups(name, value, attrs)
        options = [
            self.create_option(name, pk, self.labels[pk], True, index)
            for index, pk in enumerate(chosen)
        ]
        return [(None, options, 0)]


# Organization alerts


class OrganizationAlertAdminForm(forms.ModelForm):
    # In the organization's inline the formset counts the alerts it keeps instead.
    checks_alert_cap = True

    fire_if_already_exceeded = forms.BooleanField(
        required=False,
        initial=True,
        help_text="If usage this period is already past the threshold, fire at once "
        "(else it waits for the next period).",
    )

    class Meta:
        model = OrganizationAlert
        fields = ("organization", "threshold_type", "threshold", "notify", "admins")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        organization = cleaned.get("organization") or getattr(self.instance, "organization", None)
        if self.errors or organization is None:
            return cleaned
        try:
            # The rules the services apply, so that the form shows what they would refuse.
            configuration.validate_threshold(cleaned["threshold_type"], cleaned["threshold"])
            configuration.validate_recipients(
                organization, cleaned["notify"], list(cleaned.get("admins") or [])
            )
        except InvalidInput as error:
            raise as_form_error(error, self.fields) from None
        if (
            self.checks_alert_cap
            and self.instance.pk is None
            and organization.pk is not None
            and OrganizationAlert.objects.filter(organization=organization).count()
            >= MAX_ORGANIZATION_ALERTS
        ):
            raise ValidationError(
                f"An organization can have at most {MAX_ORGANIZATION_ALERTS} alerts."
            )
        return cleaned


@admin.register(OrganizationAlert)
class OrganizationAlertAdmin(CreditsAdminMixin, MembershipChoicesMixin, admin.ModelAdmin):
    form = OrganizationAlertAdminForm
    list_display = (
        "organization",
        "threshold_type",
        "threshold",
        "notify",
        "generation",
        "created_at",
    )
    list_filter = ("threshold_type", "notify")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "organization__name")
    autocomplete_fields = ("organization", "admins")

    def get_fields(
        self, request: HttpRequest, obj: OrganizationAlert | None = None
    ) -> tuple[str, ...]:
        editable = ("organization", "threshold_type", "threshold", "notify", "admins")
        if obj is None:
            return (*editable, "fire_if_already_exceeded")
        return (*editable, "generation", "quiet_period_start", "created_at", "updated_at")

    def get_readonly_fields(
        self, request: HttpRequest, obj: OrganizationAlert | None = None
    ) -> list[str]:
        if obj is None:
            return []
        return ["organization", "generation", "quiet_period_start", "created_at", "updated_at"]

    def save_model(
        self, request: HttpRequest, obj: OrganizationAlert, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        if change:
            saved = _alert_update(OrganizationAlert.objects.get(pk=obj.pk), data)
        else:
            saved = _alert_create(data["organization"], data)
        copy_into(obj, saved)

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool
    ) -> None:
        # The service has set the admins (none unless notifying specific admins).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: OrganizationAlert) -> None:
        configuration.alert_delete(alert=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[OrganizationAlert]) -> None:
        for alert in queryset:
            configuration.alert_delete(alert=alert)


def _alert_create(organization: Organization, data: dict[str, Any]) -> OrganizationAlert:
    """An alert from an admin form's data (the inline's has no choice to fire: it does)."""
    return configuration.alert_create(
        organization=organization,
        threshold_type=data["threshold_type"],
        threshold=data["threshold"],
        notify=data["notify"],
        admins=list(data.get("admins") or []),
        fire_if_already_exceeded=data.get("fire_if_already_exceeded", True),
    )


def _alert_update(alert: OrganizationAlert, data: dict[str, Any]) -> OrganizationAlert:
    return configuration.alert_update(
        alert=alert,
        threshold_type=data["threshold_type"],
        threshold=data["threshold"],
        notify=data["notify"],
        admins=list(data.get("admins") or []),
    )


class OrganizationAlertInlineForm(OrganizationAlertAdminForm):
    # New alerts of the inline fire at once when already passed, as by default.
    fire_if_already_exceeded = None  # type: ignore[assignment]
    checks_alert_cap = False


class OrganizationAlertFormSet(BaseInlineFormSet):
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
        ]
        if len(kept) > MAX_ORGANIZATION_ALERTS:
            raise ValidationError(
                f"An organization can have at most {MAX_ORGANIZATION_ALERTS} alerts."
            )

    def save_new(self, form: forms.ModelForm, commit: bool = True) -> OrganizationAlert:
        saved_only_through_services(commit)
        return _alert_create(self.instance, form.cleaned_data)

    def save_existing(
        self, form: forms.ModelForm, obj: OrganizationAlert, commit: bool = True
    ) -> OrganizationAlert:
        saved_only_through_services(commit)
        # `obj` already holds the form's values: the service compares with the stored ones.
        stored = OrganizationAlert.objects.select_related("organization").get(pk=obj.pk)
        return _alert_update(stored, form.cleaned_data)

    def delete_existing(self, obj: OrganizationAlert, commit: bool = True) -> None:
        saved_only_through_services(commit)
        configuration.alert_delete(alert=obj)


def saved_only_through_services(commit: bool) -> None:
    """Inline rows saved by a service cannot be saved later by the caller."""
    if not commit:
        raise ValueError("These rows are saved by the services: save the formset with commit.")


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
                for membership in _memberships_with_labels().filter(pk__in=chosen)
            }
        return formset


# Per-user credit usage alerts


class UserAlertPolicyAdminForm(forms.ModelForm):
    class Meta:
        model = UserAlertPolicy
        fields = ("organization", "enabled", "threshold", "notify_user", "admins")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        organization = cleaned.get("organization") or getattr(self.instance, "organization", None)
        if self.errors or organization is None:
            return cleaned
        threshold = cleaned.get("threshold")
        if threshold is not None and threshold <= 0:
            self.add_error("threshold", "The threshold must be greater than 0.")
        elif cleaned.get("enabled") and threshold is None:
            self.add_error("threshold", "Set a threshold to turn per-user alerts on.")
        try:
            validate_admins(organization=organization, admins=list(cleaned.get("admins") or []))
            configuration.validate_user_alert_recipients(
                enabled=bool(cleaned.get("enabled")),
                notify_user=bool(cleaned.get("notify_user")),
                admins=list(cleaned.get("admins") or []),
            )
        except InvalidInput as error:
            raise as_form_error(error, self.fields) from None
        return cleaned


@admin.register(UserAlertPolicy)
class UserAlertPolicyAdmin(CreditsAdminMixin, MembershipChoicesMixin, admin.ModelAdmin):
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

    def save_model(
        self, request: HttpRequest, obj: UserAlertPolicy, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        saved = configuration.user_alert_policy_update(
            organization=obj.organization,
            enabled=data["enabled"],
            threshold=data["threshold"],
            clear_threshold=data["threshold"] is None,
            notify_user=data["notify_user"],
            admins=list(data.get("admins") or []),
        )
        copy_into(obj, saved)

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool
    ) -> None:
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)


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


class DeliveryAttemptInline(admin.TabularInline):
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

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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

    @admin.display(description="payload")
    def formatted_payload(self, notification: Notification) -> str:
        return pretty_json(notification.payload)

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


# Webhook endpoints


class WebhookEndpointAdminForm(forms.ModelForm):
    # A plain field: the service says which URLs are acceptable (and why not).
    url = forms.CharField(max_length=WebhookEndpoint._meta.get_field("url").max_length)
    events = forms.MultipleChoiceField(
        choices=[(event, event) for event in WEBHOOK_EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("organization", "url", "events", "disabled_at", "disabled_reason")

    def clean_url(self) -> str:
        try:
            return webhook_url_validate(self.cleaned_data["url"])
        except InvalidInput as error:
            raise ValidationError(error.message) from None

    def clean_events(self) -> list[str]:
        try:
            return webhook_events_validate(self.cleaned_data["events"])
        except InvalidInput as error:
            raise ValidationError(error.message) from None


class EndpointStatusFilter(NullListFilter):
    title = "status"
    parameter_name = "status"
    field = "disabled_at"
    options = [("active", "Active", True), ("disabled", "Disabled", False)]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """The secret is made by the service and shown once, when the endpoint is added."""

    form = WebhookEndpointAdminForm
    list_display = ("url", "organization", "event_types", "disabled", "created_at")
    list_filter = (EndpointStatusFilter,)
    list_select_related = ("organization",)
    search_fields = ("url", "organization__slug")
    autocomplete_fields = ("organization",)

    @admin.display(description="events")
    def event_types(self, endpoint: WebhookEndpoint) -> str:
        # Words a reader scans, not a Python list: ['alert.fired', ...].
        return ", ".join(endpoint.events)

    @admin.display(boolean=True, description="disabled")
    def disabled(self, endpoint: WebhookEndpoint) -> bool:
        return endpoint.disabled_at is not None

    def get_fields(
        self, request: HttpRequest, obj: WebhookEndpoint | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ("organization", "url", "events")
        return ("organization", "url", "events", "created_at", "disabled_at", "disabled_reason")

    def get_readonly_fields(
        self, request: HttpRequest, obj: WebhookEndpoint | None = None
    ) -> list[str]:
        return ["organization", "created_at"] if obj else []

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created, secret = webhook_endpoint_create(
            organization=obj.organization, url=obj.url, events=obj.events
        )
        copy_into(obj, created)
        self.message_user(
            request,
            f"The endpoint's signing secret is {secret} — copy it now: it is shown only this once.",
            messages.SUCCESS,
        )
