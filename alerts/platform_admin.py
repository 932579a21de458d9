"""Platform alerts in the Django admin (SPEC §12): staff add, change and
delete them; their firings are history, read-only, filtered by alert and
plan. Saved through `platform_alert_save`, which has the organizations
already past a new or changed alert told off the request.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from alerts.platform_models import PlatformAlert, PlatformFiring
from alerts.services import platform_config
from config.admin_kit import AddPageFieldsMixin, ReadOnlyAdmin
from config.admin_site import CreditsAdminMixin
from config.credits import readable_credits
from config.errors import InvalidInput

NO_SECRET = (
    "PLATFORM_WEBHOOK_SECRET is not set: platform webhooks are not sent until it is "
    "(README, Configuration)."
)
RECENT_FIRINGS = 10


def _lines(raw: str) -> list[str]:
    """One item a line (commas and spaces separate them too)."""
    return [item for item in raw.replace(",", " ").split() if item]


class PlatformAlertForm(forms.ModelForm):
    emails = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Email addresses to tell, one a line.",
    )
    webhook_urls = forms.CharField(
        required=False,
        label="Webhook URLs",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="URLs sent a signed platform_alert.triggered event, one a line.",
    )

    class Meta:
        model = PlatformAlert
        fields = (
            "name",
            "plan",
            "threshold_type",
            "threshold",
            "emails",
            "webhook_urls",
            "enabled",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plan = self.fields["plan"]
        assert isinstance(plan, forms.ModelChoiceField)
        plan.empty_label = "All organizations"
        if self.instance.pk is not None:
            self.initial["emails"] = "\n".join(self.instance.emails)
            self.initial["webhook_urls"] = "\n".join(self.instance.webhook_urls)
        if not settings.PLATFORM_WEBHOOK_SECRET:
            self.fields["webhook_urls"].help_text += " " + NO_SECRET

    def clean_emails(self) -> list[str]:
        return self._service_checked(platform_config.platform_emails_validate, "emails")

    def clean_webhook_urls(self) -> list[str]:
        return self._service_checked(platform_config.platform_urls_validate, "webhook_urls")

    def _service_checked(self, validate: Any, name: str) -> list[str]:
        try:
            checked: list[str] = validate(_lines(self.cleaned_data[name]))
        except InvalidInput as error:
            raise ValidationError(error.message) from None
        return checked

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "threshold_type" in cleaned and "threshold" in cleaned:
            try:
                platform_config.platform_threshold_validate(
                    cleaned["threshold_type"], cleaned["threshold"]
                )
            except InvalidInput as error:
                self.add_error("threshold", error.message)
        if (
            "emails" in cleaned
            and "webhook_urls" in cleaned
            and not cleaned["emails"]
            and not cleaned["webhook_urls"]
        ):
            self.add_error("emails", "Give at least one email address or webhook URL to tell.")
        return cleaned


@admin.register(PlatformAlert)
class PlatformAlertAdmin(AddPageFieldsMixin, CreditsAdminMixin, admin.ModelAdmin):
    """The operator's own alerts across organizations."""

    form = PlatformAlertForm
    list_display = ("name", "scope", "watches", "enabled", "firings_link")
    list_filter = ("enabled", "threshold_type", "plan")
    list_select_related = ("plan",)
    search_fields = ("name",)
    add_fields = PlatformAlertForm.Meta.fields
    readonly_fields = ("firings_link", "recent_firings", "created_at", "updated_at")
    fields = (*PlatformAlertForm.Meta.fields, *readonly_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PlatformAlert]:
        return super().get_queryset(request).annotate(firings_count=Count("firings"))

    @admin.display(description="scope")
    def scope(self, alert: PlatformAlert) -> str:
        return f"Plan {alert.plan}" if alert.plan_id is not None else "All organizations"

    @admin.display(description="fires at")
    def watches(self, alert: PlatformAlert) -> str:
        return alert.describe()

    @admin.display(description="firings")
    def firings_link(self, alert: PlatformAlert) -> str:
        if alert.pk is None:
            return "-"
        url = reverse("admin:alerts_platformfiring_changelist")
        count = getattr(alert, "firings_count", None)
        if count is None:
            count = alert.firings.count()
        return format_html(
            '<a href="{}?platform_alert__id__exact={}">{} firing{}</a>',
            url,
            alert.pk,
            count,
            "" if count == 1 else "s",
        )

    @admin.display(description=f"latest {RECENT_FIRINGS} firings")
    def recent_firings(self, alert: PlatformAlert) -> str:
        if alert.pk is None:
            return "-"
        latest = alert.firings.select_related("organization")[:RECENT_FIRINGS]
        if not latest:
            return "None yet."
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} ({}): usage {} at {}</li>",
                (
                    (
                        firing.organization.name,
                        firing.organization.slug,
                        readable_credits(firing.value),
                        f"{firing.triggered_at:%Y-%m-%d %H:%M} UTC",
                    )
                    for firing in latest
                ),
            ),
        )

    def save_model(self, request: HttpRequest, obj: PlatformAlert, form: Any, change: bool) -> None:
        platform_config.platform_alert_save(alert=obj)
        if obj.webhook_urls and not settings.PLATFORM_WEBHOOK_SECRET:
            self.message_user(request, NO_SECRET, messages.WARNING)


@admin.register(PlatformFiring)
class PlatformFiringAdmin(ReadOnlyAdmin):
    list_display = (
        "platform_alert",
        "organization",
        "plan",
        "fired_at",
        "value",
        "allowance",
        "period_start",
        "triggered_at",
    )
    list_filter = ("platform_alert", "plan")
    list_select_related = ("platform_alert", "organization", "plan")
    search_fields = ("organization__slug", "organization__name")
    date_hierarchy = "triggered_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[PlatformFiring]:
        return super().get_queryset(request).select_related("platform_alert", "organization")

    @admin.display(description="fired at")
    def fired_at(self, firing: PlatformFiring) -> str:
        """The threshold as it was configured when it fired."""
        return PlatformAlert(
            threshold_type=firing.threshold_type, threshold=firing.threshold
        ).describe()
