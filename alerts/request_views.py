"""Limit-increase requests on the pages (SPEC §14): the member asks from the
blocked notice (or My usage) and may take the request back; admins answer
in the Limit Requests section of Limits & Alerts.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.web import (
    OrganizationHttpRequest,
    admin_required,
    found_or_404,
    organization_required,
)
from alerts.models import LimitRequest, LimitRequestStatus
from alerts.request_forms import LimitRequestApproveForm, LimitRequestDenyForm, LimitRequestForm
from alerts.sections import LIMIT_REQUESTS, USER_LIMITS
from alerts.services import limit_requests
from alerts.views import limits_dialog, limits_done
from config.forms import form_saved


@require_http_methods(["POST"])
@organization_required
def limit_request_ask(request: OrganizationHttpRequest) -> HttpResponse:
    membership = request.membership
    form = LimitRequestForm(request.POST)
    if form_saved(
        form,
        lambda data: limit_requests.limit_request_create(
            organization=membership.organization,
            membership=membership,
            credits=data["credits"],
            reason=data["reason"],
        ),
    ):
        messages.success(request, "Your request was sent to your admins.")
        return redirect("my_usage")
    return render(request, "alerts/limit_request_page.html", {"form": form}, status=422)


@require_http_methods(["POST"])
@organization_required
def limit_request_withdraw(request: OrganizationHttpRequest) -> HttpResponse:
    pending = limit_requests.pending_request_of(request.membership)
    if pending is not None:
        limit_requests.limit_request_withdraw(request=pending)
        messages.success(request, "Your request was taken back.")
    return redirect("my_usage")


def _pending_of(request: OrganizationHttpRequest, request_id: int) -> LimitRequest:
    """A pending request of the request's organization, or 404."""
    return found_or_404(
        LimitRequest.objects.filter(
            organization=request.membership.organization,
            pk=request_id,
            status=LimitRequestStatus.PENDING,
        )
        .select_related("organization", "membership__user")
        .first(),
        "No such request waiting in this organization.",
    )


@require_http_methods(["GET", "POST"])
@admin_required
def limit_request_approve(request: OrganizationHttpRequest, request_id: int) -> HttpResponse:
    pending = _pending_of(request, request_id)
    form = LimitRequestApproveForm(request.POST or None, initial={"credits": pending.credits})
    if form_saved(
        form,
        lambda data: limit_requests.limit_request_approve(
            request=pending,
            by=request.membership,
            credits=data["credits"],
            this_period_only=data["this_period_only"],
        ),
    ):
        return limits_done(request, "Request approved.", LIMIT_REQUESTS, USER_LIMITS)
    return _answer_dialog(request, form, pending, approving=True)


@require_http_methods(["GET", "POST"])
@admin_required
def limit_request_deny(request: OrganizationHttpRequest, request_id: int) -> HttpResponse:
    pending = _pending_of(request, request_id)
    form = LimitRequestDenyForm(request.POST or None)
    if form_saved(
        form,
        lambda data: limit_requests.limit_request_deny(
            request=pending, by=request.membership, answer=data["reason"]
        ),
    ):
        return limits_done(request, "Request denied.", LIMIT_REQUESTS)
    return _answer_dialog(request, form, pending, approving=False)


def _answer_dialog(
    request: OrganizationHttpRequest, form: Any, pending: LimitRequest, *, approving: bool
) -> HttpResponse:
    context = {"form": form, "limit_request": pending, "approving": approving}
    return limits_dialog(
        request,
        "alerts/_limit_request_answer.html",
        context,
        status=422 if form.is_bound else 200,
    )
