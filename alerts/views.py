from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts.web import OrganizationHttpRequest, admin_required
from billing.credits import format_credits


@require_http_methods(["GET"])
@admin_required
def limits_settings(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    allowance = organization.credit_allowance
    return render(
        request,
        "alerts/limits_settings.html",
        {
            "organization": organization,
            "allowance": format_credits(allowance) if allowance is not None else None,
        },
    )
