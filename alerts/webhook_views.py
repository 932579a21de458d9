"""The Webhooks page (SPEC §6), for admins: endpoints, their secrets, recent deliveries.

Built like the Limits & Alerts page (docs/pages.md). Adding an endpoint is an
inline form: a bad one comes back with its errors (422); a good one answers
with the form again, the new endpoint's secret above it, and the endpoint
list swapped out of band. The secret is in that answer only: nothing stores
it for a later page, so without JavaScript the answer is the page itself
rather than a redirect. Removing asks first, in the page's dialog.

The rules (URL check, private addresses, the cap of 20, the event types)
are the API's, in `alerts.webhooks`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_http_methods

from accounts.models import Organization
from accounts.web import (
    OrganizationHttpRequest,
    admin_required,
    change_done,
    found_or_404,
    status_message,
)
from alerts import webhooks
from alerts.models import WebhookEndpoint
from alerts.selectors import (
    RECENT_DELIVERIES,
    webhook_deliveries_recent,
    webhook_endpoint_get,
    webhook_endpoints_list,
)
from config.errors import ServiceError
from config.forms import add_service_error

ENDPOINTS = "webhook-endpoints"
ADD = "webhook-add"
DELIVERIES = "webhook-deliveries"
SECTION_TEMPLATES = {
    ENDPOINTS: "alerts/_webhook_endpoints.html",
    ADD: "alerts/_webhook_add.html",
    DELIVERIES: "alerts/_webhook_deliveries.html",
}

EVENT_DESCRIPTIONS = {
    "alert.triggered": "an organization alert fired",
    "user_alert.triggered": "a member passed the credit usage alert threshold",
    "user_limit.reached": "a member reached their credit limit",
    "invoice.created": "an invoice was made (billing threshold reached, or the period's end)",
}


class WebhookEndpointForm(forms.Form):
    # A plain text field: `webhooks.webhook_url_validate` is the one URL rule, for the API too.
    url = forms.CharField(
        label="URL",
        strip=True,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/webhooks/headroom"}),
        help_text="Where Headroom POSTs signed events (Standard Webhooks).",
    )
    events = forms.MultipleChoiceField(
        label="Events",
        choices=[
            (event, f"{event} — {EVENT_DESCRIPTIONS.get(event, event)}")
            for event in webhooks.WEBHOOK_EVENT_TYPES
        ],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one event type."},
    )

    def clean_url(self) -> str:
        # Checked here too (the service checks again) so that a bad URL shows
        # alongside the other errors of the form, not only once they are fixed.
        try:
            return webhooks.webhook_url_validate(self.cleaned_data["url"])
        except ServiceError as error:
            raise forms.ValidationError(error.message, code=error.code) from None


def _section_context(organization: Organization, section: str) -> dict[str, Any]:
    if section == ENDPOINTS:
        return {
            "endpoints": list(webhook_endpoints_list(organization=organization)),
            "max_endpoints": webhooks.MAX_WEBHOOK_ENDPOINTS,
        }
    if section == DELIVERIES:
        return {
            "deliveries": webhook_deliveries_recent(organization=organization),
            "recent_deliveries": RECENT_DELIVERIES,
        }
    if section == ADD:
        count = webhook_endpoints_list(organization=organization).count()
        return {
            "form": WebhookEndpointForm(prefix="webhook"),
            "max_endpoints": webhooks.MAX_WEBHOOK_ENDPOINTS,
            "can_add_endpoint": count < webhooks.MAX_WEBHOOK_ENDPOINTS,
        }
    raise ValueError(f"unknown section {section!r}")


def _page(
    request: OrganizationHttpRequest, *, status: int = 200, **add_context: Any
) -> HttpResponse:
    """The whole page; `add_context` (a bound form, a new secret) replaces the fresh form."""
    organization = request.membership.organization
    context: dict[str, Any] = {"organization": organization}
    for section in SECTION_TEMPLATES:
        context |= _section_context(organization, section)
    context |= add_context
    return render(request, "alerts/webhooks.html", context, status=status)


@require_http_methods(["GET"])
@admin_required
def webhooks_settings(request: OrganizationHttpRequest) -> HttpResponse:
    return _page(request)


# Writes


def _oob_sections(request: OrganizationHttpRequest, *sections: str) -> str:
    organization = request.membership.organization
    return "".join(
        render_to_string(
            SECTION_TEMPLATES[section],
            {"organization": organization, "oob": True} | _section_context(organization, section),
            request=request,
        )
        for section in sections
    )


@require_http_methods(["POST"])
@admin_required
def webhook_add(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = WebhookEndpointForm(request.POST, prefix="webhook")
    if form.is_valid():
        try:
            endpoint, secret = webhooks.webhook_endpoint_create(
                organization=organization,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            created: dict[str, Any] = {"created": endpoint, "secret": secret}
            if not request.htmx:
                return _page(request, **created)
            html: str = render_to_string(
                SECTION_TEMPLATES[ADD],
                {"organization": organization} | _section_context(organization, ADD) | created,
                request=request,
            )
            html += _oob_sections(request, ENDPOINTS)
            html += status_message("Endpoint added. Copy its signing secret now.")
            return HttpResponse(html)
    if not request.htmx:
        return _page(request, status=422, form=form)
    return render(
        request,
        SECTION_TEMPLATES[ADD],
        {"organization": organization} | _section_context(organization, ADD) | {"form": form},
        status=422,
    )


def _endpoint_for(request: OrganizationHttpRequest, endpoint_id: int) -> WebhookEndpoint:
    """An endpoint of the request's organization, or 404: tenancy in one place."""
    return found_or_404(
        webhook_endpoint_get(organization=request.membership.organization, endpoint_id=endpoint_id),
        "No such webhook endpoint in this organization.",
    )


@require_http_methods(["GET", "POST"])
@admin_required
def webhook_remove(request: OrganizationHttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _endpoint_for(request, endpoint_id)
    if request.method == "POST":
        webhooks.webhook_endpoint_delete(endpoint=endpoint)
        return change_done(
            request,
            f"Endpoint {endpoint.url} removed.",
            page="webhooks_settings",
            sections=lambda: _oob_sections(request, ENDPOINTS, DELIVERIES),
        )
    context = {"organization": request.membership.organization, "endpoint": endpoint}
    if request.htmx:
        return render(request, "alerts/_webhook_remove.html", context)
    return render(request, "alerts/webhook_remove_page.html", context)
