from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    QueryDict,
)
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect, reswap

from accounts.forms import (
    ApiKeyCreateForm,
    LoginForm,
    MemberFilterForm,
    MemberRoleForm,
    MemberSearchForm,
    SwitchOrganizationForm,
)
from accounts.models import Membership, Role, normalize_email
from accounts.selectors import (
    api_key_get_by_id,
    api_keys_list,
    members_filter,
    members_search,
    membership_get_by_id,
)
from accounts.services import api_key_create, api_key_revoke, membership_delete
from accounts.web import (
    HtmxHttpRequest,
    OrganizationHttpRequest,
    admin_required,
    change_done,
    found_or_404,
    organization_required,
    status_message,
    switch_organization,
    user_memberships,
)
from alerts.services.changes import membership_update
from config.errors import ServiceError
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
def home(request: HttpRequest) -> HttpResponseBase:
    """Each role lands on its own page: admins configure, members see their
    usage; platform staff who belong to no organization, the Django admin
    (rather than the page telling members to ask an admin).
    """
    if request.user.is_staff and not user_memberships(request):
        return redirect("admin:index")
    return _organization_home(request)


@organization_required
def _organization_home(request: OrganizationHttpRequest) -> HttpResponse:
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


# Organization settings for admins (SPEC §6): Members and API Keys. Built as
# the Limits & Alerts page is (docs/pages.md): one URL serves a page and its
# list; a good change answers htmx with the list out of band, a message in
# the page's status region and `closeDialog`; a bad one is its form again
# with a 422. Without JavaScript the same URLs are plain pages and posts.

MEMBERS_PAGE_SIZE = 25
API_KEYS_PAGE_SIZE = 25
MEMBER_LIST = "member-list"
API_KEY_LIST = "api-key-list"
API_KEY_CREATE = "api-key-create"


def _member_filter(request: OrganizationHttpRequest) -> tuple[str, str | None]:
    """The search and page number the list is shown with. A change posted by
    htmx refreshes the list as the admin sees it: its page URL holds them.
    """
    params = request.GET
    if request.method == "POST" and request.htmx and request.htmx.current_url:
        params = QueryDict(urlsplit(request.htmx.current_url).query)
    form = MemberFilterForm(params)
    form.is_valid()  # a bad page number leaves the search as it is, and vice versa
    page = form.cleaned_data.get("page")
    return form.cleaned_data.get("q", ""), str(page) if page else None


def _member_list_context(
    request: OrganizationHttpRequest, *, errors: dict[int, str] | None = None
) -> dict[str, Any]:
    """One page of the list; `errors` are shown by the role of the member they name."""
    query, page = _member_filter(request)
    members = members_filter(organization=request.membership.organization, query=query)
    shown = Paginator(members, MEMBERS_PAGE_SIZE).get_page(page)
    for member in shown:
        member.row_error = (errors or {}).get(member.pk, "")  # type: ignore[attr-defined]
    return {
        "members": shown,
        "query": query,
        "role_choices": Role.choices,
        "current_membership_id": request.membership.pk,
    }


def _settings_done(
    request: OrganizationHttpRequest, message: str, page: str, *sections: str
) -> HttpResponse:
    return change_done(
        request,
        message,
        page=page,
        sections=lambda: "".join(
            _render_settings_section(request, section, oob=True) for section in sections
        ),
    )


def _render_settings_section(
    request: OrganizationHttpRequest, section: str, *, oob: bool = False
) -> str:
    if section == MEMBER_LIST:
        return render_to_string(
            "accounts/_member_list.html",
            _member_list_context(request) | {"oob": oob},
            request=request,
        )
    return render_to_string(
        "accounts/_api_key_list.html",
        _api_key_list_context(request) | {"oob": oob},
        request=request,
    )


def _settings_dialog(
    request: OrganizationHttpRequest,
    context: dict[str, Any],
    *,
    page_title: str,
    status: int = 200,
) -> HttpResponse:
    """A confirmation in the page's dialog; without htmx, on a page of its own."""
    if request.htmx:
        return render(request, "accounts/_confirm.html", context, status=status)
    return render(
        request, "accounts/confirm_page.html", context | {"page_title": page_title}, status=status
    )


def _membership_for(request: OrganizationHttpRequest, membership_id: int) -> Membership:
    """A member of the request's organization, or 404: tenancy in one place."""
    return found_or_404(
        membership_get_by_id(
            organization=request.membership.organization, membership_id=membership_id
        ),
        "No such member in this organization.",
    )


def _last_admin_message(request: OrganizationHttpRequest, error: ServiceError, verb: str) -> str:
    if error.code == "last_admin":
        return (
            f"You are the only admin of {request.membership.organization.name}: "
            f"make another member an admin before you {verb}."
        )
    return error.message


@require_http_methods(["GET"])
@admin_required
def members_settings(request: OrganizationHttpRequest) -> HttpResponse:
    context = _member_list_context(request)
    # The search box and the pagination links ask for just the list.
    if request.htmx and request.htmx.target == MEMBER_LIST:
        return render(request, "accounts/_member_list.html", context)
    context["organization"] = request.membership.organization
    return render(request, "accounts/members.html", context)


@require_http_methods(["POST"])
@admin_required
def member_role(request: OrganizationHttpRequest, membership_id: int) -> HttpResponse:
    membership = _membership_for(request, membership_id)
    form = MemberRoleForm(request.POST)
    error = "Choose Admin or Member."
    if form.is_valid():
        role = form.cleaned_data["role"]
        try:
            membership_update(membership=membership, role=role, keep_an_admin=True)
        except ServiceError as service_error:
            error = (
                _last_admin_message(request, service_error, "step down")
                if membership.pk == request.membership.pk
                else service_error.message
            )
        else:
            name = membership.display_name
            if membership.pk == request.membership.pk and role != Role.ADMIN:
                # No longer an admin: these pages are not theirs any more.
                messages.success(request, "You are now a member: an admin manages the settings.")
                if request.htmx:
                    return HttpResponseClientRedirect(reverse("home"))
                return redirect("home")
            message = f"{name} is now {'an Admin' if role == Role.ADMIN else 'a Member'}."
            if not request.htmx:
                messages.success(request, message)
                return redirect("members_settings")
            # The select already shows the new role: only the message changes.
            return reswap(HttpResponse(status_message(message)), "none")
    # Shown as stored, with the reason next to it.
    membership = _membership_for(request, membership_id)
    if request.htmx:
        membership.row_error = error  # type: ignore[attr-defined]
        context = {
            "member": membership,
            "role_choices": Role.choices,
            "current_membership_id": request.membership.pk,
        }
        return render(request, "accounts/_member_row.html", context, status=422)
    context = _member_list_context(request, errors={membership.pk: error})
    context["organization"] = request.membership.organization
    return render(request, "accounts/members.html", context, status=422)


@require_http_methods(["GET", "POST"])
@admin_required
def member_remove(request: OrganizationHttpRequest, membership_id: int) -> HttpResponse:
    membership = _membership_for(request, membership_id)
    yourself = membership.pk == request.membership.pk
    name = membership.display_name
    error = ""
    if request.method == "POST":
        try:
            membership_delete(membership=membership, keep_an_admin=True)
        except ServiceError as service_error:
            error = (
                _last_admin_message(request, service_error, "leave")
                if yourself
                else service_error.message
            )
        else:
            if yourself:
                # Gone from this organization: home finds them another, or none.
                messages.success(request, f"You have left {membership.organization.name}.")
                if request.htmx:
                    return HttpResponseClientRedirect(reverse("home"))
                return redirect("home")
            return _settings_done(request, f"{name} was removed.", "members_settings", MEMBER_LIST)
    question = (
        f"Leave {membership.organization.name}? You will lose access to it at once."
        if yourself
        else f"Remove {name} ({membership.user.email}) from "
        f"{membership.organization.name}? They lose access at once."
    )
    context = {
        "title": "Leave organization" if yourself else "Remove member",
        "question": question,
        "detail": "Their usage stays in the organization's totals and history.",
        "error": error,
        "action": request.path,
        "back_url": reverse("members_settings"),
        "confirm_label": "Leave" if yourself else "Remove",
    }
    return _settings_dialog(request, context, page_title="Members", status=422 if error else 200)


def _api_key_list_context(request: OrganizationHttpRequest) -> dict[str, Any]:
    keys = api_keys_list(organization=request.membership.organization)
    return {"api_keys": Paginator(keys, API_KEYS_PAGE_SIZE).get_page(request.GET.get("page"))}


@require_http_methods(["GET", "POST"])
@admin_required
@never_cache  # the answer to a creation holds the new key
def api_keys_settings(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    if request.htmx and request.htmx.target == API_KEY_LIST and request.method == "GET":
        return render(request, "accounts/_api_key_list.html", _api_key_list_context(request))
    form = ApiKeyCreateForm(request.POST if request.method == "POST" else None)
    context: dict[str, Any] = {"organization": organization, "form": form}
    status = 200
    if form.is_bound:
        if form.is_valid():
            api_key, raw_key = api_key_create(
                organization=organization, name=form.cleaned_data["name"]
            )
            context |= {"new_key": api_key, "raw_key": raw_key, "form": ApiKeyCreateForm()}
            if request.htmx:
                # The key is shown once, here: never in a redirect or the session.
                message = f"API key “{api_key.name}” created. Copy it now."
                parts = [
                    render_to_string("accounts/_api_key_create.html", context, request=request),
                    _render_settings_section(request, API_KEY_LIST, oob=True),
                    status_message(message),
                ]
                return HttpResponse("".join(parts), status=201)
            status = 201
        else:
            status = 422
            if request.htmx:
                return render(request, "accounts/_api_key_create.html", context, status=status)
    return render(
        request, "accounts/api_keys.html", context | _api_key_list_context(request), status=status
    )


@require_http_methods(["GET", "POST"])
@admin_required
def api_key_revoke_view(request: OrganizationHttpRequest, api_key_id: int) -> HttpResponse:
    api_key = api_key_get_by_id(organization=request.membership.organization, api_key_id=api_key_id)
    if api_key is None:
        raise Http404("No such API key in this organization.")
    label = f"“{api_key.name}” ({api_key.prefix}…)" if api_key.name else f"{api_key.prefix}…"
    if request.method == "POST":
        api_key_revoke(api_key=api_key)
        return _settings_done(
            request, f"API key {label} revoked.", "api_keys_settings", API_KEY_LIST
        )
    context = {
        "title": "Revoke API key",
        "question": f"Revoke the API key {label}?",
        "detail": "Requests made with it are refused at once (401). This cannot be undone.",
        "action": request.path,
        "back_url": reverse("api_keys_settings"),
        "confirm_label": "Revoke",
    }
    return _settings_dialog(request, context, page_title="API Keys")
