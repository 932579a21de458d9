from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from accounts.forms import LoginForm, MemberSearchForm, SwitchOrganizationForm
from accounts.models import normalize_email
from accounts.selectors import members_search
from accounts.web import (
    HtmxHttpRequest,
    OrganizationHttpRequest,
    admin_required,
    organization_required,
    switch_organization,
)
from config.ratelimit import login_failed, login_throttled


def _safe_next_url(request: HttpRequest) -> str:
    """The `next` parameter if it points back into this site, else ''."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return next_url
    return ""


@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def login_view(request: HtmxHttpRequest) -> HttpResponse:
    next_url = _safe_next_url(request)
    if request.method == "GET" and request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    form = LoginForm(request, data=request.POST if request.method == "POST" else None)
    if request.method == "POST":
        email = normalize_email(request.POST.get("email", ""))[:254]
        throttled = login_throttled(request, email=email)
        if throttled is not None:
            minutes = -(-throttled.retry_after // 60)
            error = (
                "Too many failed log-in attempts. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            )
            form = LoginForm(request, initial={"email": email})
            context = {"form": form, "next": next_url, "error": error}
            response = render(request, "accounts/login.html", context, status=429)
            response["Retry-After"] = str(throttled.retry_after)
            return response
        if form.is_valid() and form.user is not None:
            login(request, form.user)
            return redirect(next_url or settings.LOGIN_REDIRECT_URL)
        if form.has_error(NON_FIELD_ERRORS, "invalid_login"):
            login_failed(request, email=email)
    return render(request, "accounts/login.html", {"form": form, "next": next_url})


@require_http_methods(["POST"])
def logout_view(request: HtmxHttpRequest) -> HttpResponse:
    logout(request)
    messages.success(request, "You have been logged out.")
    return redirect(settings.LOGOUT_REDIRECT_URL)


@require_http_methods(["GET"])
@organization_required
def home(request: OrganizationHttpRequest) -> HttpResponse:
    """Each role lands on its own page: admins configure, members see their usage."""
    if request.membership.is_admin:
        return redirect("limits_settings")
    return redirect("my_usage")


@require_http_methods(["POST"])
@organization_required
def switch_organization_view(request: OrganizationHttpRequest) -> HttpResponse:
    form = SwitchOrganizationForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Choose an organization.")
    membership = switch_organization(request, organization_id=form.cleaned_data["organization"])
    messages.success(request, f"You are now working in {membership.organization.name}.")
    # Home sends each role to its own landing page in the new organization.
    if request.htmx:
        return HttpResponseClientRedirect(reverse("home"))
    return redirect("home")


@require_http_methods(["GET"])
@admin_required
def member_search(request: OrganizationHttpRequest) -> HttpResponse:
    """The options of a member picker: who matches what has been typed so far."""
    form = MemberSearchForm(request.GET)
    query, role = (
        (form.cleaned_data["q"], form.cleaned_data["role"]) if form.is_valid() else ("", "")
    )
    members = members_search(
        organization=request.membership.organization, query=query, role=role or None
    )
    return render(
        request,
        "components/member_options.html",
        {"members": members, "query": query, "noun": "admins" if role == "admin" else "members"},
    )
