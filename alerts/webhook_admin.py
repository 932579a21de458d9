"""Webhook endpoints in the Django admin: added through the service, which
makes the secret (shown once) and says which URLs and events are acceptable.
Registered by alerts/admin.py.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from alerts.models import WebhookEndpoint
from alerts.webhooks import (
    WEBHOOK_EVENT_TYPES,
    webhook_endpoint_create,
    webhook_events_validate,
    webhook_url_validate,
)
from config.admin_kit import AddPageFieldsMixin, SecretShownOnceMixin, as_form_error, null_filter
from config.errors import InvalidInput


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
            raise as_form_error(error) from None

    def clean_events(self) -> list[str]:
        try:
            return webhook_events_validate(self.cleaned_data["events"])
        except InvalidInput as error:
            raise as_form_error(error) from None


EndpointStatusFilter = null_filter(
    "disabled_at", "status", "status", active="Active", disabled="Disabled", null="active"
)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(SecretShownOnceMixin, AddPageFieldsMixin, admin.ModelAdmin):
    """The secret is made by the service and shown once, when the endpoint is added."""

    form = WebhookEndpointAdminForm
    list_display = ("url", "organization", "event_types", "disabled", "created_at")
    list_filter = (EndpointStatusFilter,)
    list_select_related = ("organization",)
    search_fields = ("url", "organization__slug")
    autocomplete_fields = ("organization",)
    add_fields = ("organization", "url", "events")
    fields = ("organization", "url", "events", "created_at", "disabled_at", "disabled_reason")
    readonly_fields = ("organization", "created_at")
    secret_is = "The endpoint's signing secret is"

    @admin.display(description="events")
    def event_types(self, endpoint: WebhookEndpoint) -> str:
        # Words a reader scans, not a Python list: ['alert.fired', ...].
        return ", ".join(endpoint.events)

    @admin.display(boolean=True, description="disabled")
    def disabled(self, endpoint: WebhookEndpoint) -> bool:
        return endpoint.disabled_at is not None

    def create_with_secret(self, obj: WebhookEndpoint) -> tuple[WebhookEndpoint, str]:
        return webhook_endpoint_create(
            organization=obj.organization, url=obj.url, events=obj.events
        )
