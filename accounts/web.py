"""Tenancy for the browser pages, in one place.

The current organization of a browser session is the one stored in the
session under `organization_id`, if the user still belongs to it; otherwise
the user's first membership. Views reach it through `current_membership`
or, decorated with `@organization_required` / `@admin_required`, through
`request.membership`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django_htmx.http import HttpResponseClientRedirect, reswap, trigger_client_event
from django_htmx.middleware import HtmxDetails

from accounts.models import Membership, User
from accounts.selectors import memberships_of_user

SESSION_ORGANIZATION_KEY = "organization_id"
ADMIN_REQUIRED_MESSAGE = "Only Admins can configure credit alerts and limits."

P = ParamSpec("P")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


class AuthenticatedHttpRequest(HtmxHttpRequest):
    user: User


class OrganizationHttpRequest(AuthenticatedHttpRequest):
    """A request that `@organization_required` has let through."""

    membership: Membership


# A view may stream (StreamingHttpResponse): views answer the base class.
OrganizationView = Callable[Concatenate[OrganizationHttpRequest, P], HttpResponseBase]
View = Callable[Concatenate[HttpRequest, P], HttpResponseBase]


def user_memberships(request: HttpRequest) -> list[Membership]:
    """The user's memberships with their organizations: one query per request."""
    cached: list[Membership] | None = getattr(request, "_user_memberships", None)
    if cached is None:
        user = request.user
        cached = list(memberships_of_user(user=user)) if isinstance(user, User) else []
        request._user_memberships = cached  # type: ignore[attr-defined]
    return cached


def current_membership(request: HttpRequest) -> Membership | None:
    """The membership of the organization this session works in; None if the user has none."""
    memberships = user_memberships(request)
    if not memberships:
        return None
    chosen_id = request.session.get(SESSION_ORGANIZATION_KEY)
    for membership in memberships:
        if membership.organization_id == chosen_id:
            return membership
    # First visit, or the user has left the chosen organization since.
    fallback = memberships[0]
    request.session[SESSION_ORGANIZATION_KEY] = fallback.organization_id
    return fallback


def switch_organization(request: HttpRequest, *, organization_id: int) -> Membership:
    """Make `organization_id` the session's organization; 404 unless the user belongs to it."""
    for membership in user_memberships(request):
        if membership.organization_id == organization_id:
            request.session[SESSION_ORGANIZATION_KEY] = organization_id
            return membership
    raise Http404("You are not a member of this organization.")


def login_redirect(request: HttpRequest) -> HttpResponse:
    """Send an anonymous visitor to the login page, and back here afterwards."""
    response = redirect_to_login(request.get_full_path())
    if getattr(request, "htmx", False):
        # A plain redirect would swap the login page into a fragment.
        return HttpResponseClientRedirect(response["Location"])
    return response


def no_organization_response(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/no_organization.html", status=403)


def admin_required_response(request: HttpRequest) -> HttpResponse:
    return render(
        request, "accounts/admin_required.html", {"message": ADMIN_REQUIRED_MESSAGE}, status=403
    )


def organization_required(view: OrganizationView[P]) -> View[P]:
    """Logged in and a member of some organization; sets `request.membership`."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return login_redirect(request)
        membership = current_membership(request)
        if membership is None:
            return no_organization_response(request)
        request.membership = membership  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)  # type: ignore[arg-type]

    return wrapper


def admin_required(view: OrganizationView[P]) -> View[P]:
    """Like `organization_required`, and an admin of that organization (else 403)."""

    @wraps(view)
    def admins_only(
        request: OrganizationHttpRequest, *args: P.args, **kwargs: P.kwargs
    ) -> HttpResponseBase:
        if not request.membership.is_admin:
            return admin_required_response(request)
        return view(request, *args, **kwargs)

    return organization_required(admins_only)


# Answers of the settings pages (docs/pages.md), shared by all of them.


Found = TypeVar("Found")


def found_or_404(found: Found | None, message: str) -> Found:
    """What a selector found in the request's organization, or 404: the
    organization is always part of the lookup, so another's is never found.
    """
    if found is None:
        raise Http404(message)
    return found


def status_message(message: str) -> str:
    """The page's status message after a change, swapped out of band into its live region."""
    return render_to_string("components/status.html", {"message": message, "oob": True})


def change_done(
    request: HtmxHttpRequest, message: str, *, page: str, sections: Callable[[], str]
) -> HttpResponse:
    """A change was made. Without htmx: back to `page` (a URL name) with the
    message. With it: the sections the change moved (`sections()` renders
    them out of band), the message, and `closeDialog`; nothing else swapped.
    """
    if not request.htmx:
        messages.success(request, message)
        return redirect(page)
    response = HttpResponse(sections() + status_message(message))
    reswap(response, "none")
    return trigger_client_event(response, "closeDialog")
