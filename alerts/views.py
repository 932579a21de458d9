"""The Limits & Alerts page (SPEC §6), for admins.

One page with five sections. Every change is a form posted by htmx: a bad
one comes back as the form with its errors (422); a good one answers with
the sections it changed, swapped out of band, a message in the status
region and `closeDialog`. Without JavaScript the same URLs work as plain
pages: a good form redirects back to the page, a bad one shows its errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.paginator import Page, Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_http_methods

from accounts.models import Organization
from accounts.selectors import member_name_expression
from accounts.web import OrganizationHttpRequest, admin_required, change_done
from alerts import services
from alerts.forms import (
    CustomLimitForm,
    LimitPolicyForm,
    OrganizationAlertForm,
    UserAlertPolicyForm,
    add_service_error,
)
from alerts.models import MAX_ORGANIZATION_ALERTS, OrganizationAlert, Recipients
from alerts.selectors import (
    alerts_with_status,
    firings_of_period,
    members_past_user_alert_threshold,
    organization_alert_get,
    organization_alerts,
)
from billing.models import CustomLimit, Source
from billing.periods import Period
from billing.selectors import (
    current_period,
    custom_limits_list,
    limit_policy_get,
    members_over_budget,
    organization_used,
)
from billing.services import custom_limit_delete, custom_limit_set, limit_policy_update
from config.credits import format_credits
from config.errors import ServiceError

PAGE_SIZE = 25
HISTORY_SIZE = 50

# Section id -> its template. Each template's root element carries the id.
ORGANIZATION_ALERTS = "organization-alerts"
USER_ALERTS = "credit-usage-alerts"
USER_ALERTS_ALREADY_PAST = "user-alerts-already-past"
USER_LIMITS = "per-user-limits"
CUSTOM_LIMITS = "custom-limits"
EXCEEDING = "users-exceeding"
HISTORY = "alert-history"
SECTION_TEMPLATES = {
    ORGANIZATION_ALERTS: "alerts/_organization_alerts.html",
    USER_ALERTS: "alerts/_user_alerts.html",
    USER_LIMITS: "alerts/_user_limits.html",
    CUSTOM_LIMITS: "alerts/_custom_limits.html",
    EXCEEDING: "alerts/_users_exceeding.html",
    HISTORY: "alerts/_alert_history.html",
}


# Reads: what each section shows


def _page(items: Any, number: str | None) -> Page[Any]:
    return Paginator(items, PAGE_SIZE).get_page(number)


def _organization_alerts_context(organization: Organization, period: Period) -> dict[str, Any]:
    alerts = list(organization_alerts(organization=organization))
    return {
        "alert_rows": alerts_with_status(organization=organization, alerts=alerts, period=period),
        "max_alerts": MAX_ORGANIZATION_ALERTS,
        "can_add_alert": len(alerts) < MAX_ORGANIZATION_ALERTS,
    }


@dataclass(frozen=True)
class AlreadyPast:
    """What saving the Credit Usage Alerts form would do to the members
    already past its threshold, said before saving (the note under the field).
    """

    count: int
    threshold: Decimal
    enabled: bool
    notify_user: bool
    admins_chosen: bool
    fire_at_once: bool


def _already_past(
    organization: Organization, period: Period, form: UserAlertPolicyForm
) -> AlreadyPast | None:
    """From the form as it stands (typed, posted or as saved); None without a threshold."""
    if form.is_bound:
        form.is_valid()  # cleaned_data keeps every field that is valid
        values = form.cleaned_data
    else:
        values = {
            name: form.get_initial_for_field(field, name) for name, field in form.fields.items()
        }
    threshold = values.get("threshold")
    if threshold is None:
        return None
    policy = services.user_alert_policy_get(organization=organization)
    # A new threshold is a new arming: nobody has been told at it yet.
    generation = policy.generation if threshold == policy.threshold else policy.generation + 1
    return AlreadyPast(
        count=members_past_user_alert_threshold(
            organization=organization, period=period, threshold=threshold, generation=generation
        ),
        threshold=threshold,
        enabled=bool(values.get("enabled")),
        notify_user=bool(values.get("notify_user")),
        admins_chosen=bool(values.get("admins")),
        fire_at_once=bool(values.get("fire_if_already_exceeded")),
    )


def _user_alerts_context(
    organization: Organization, period: Period, form: UserAlertPolicyForm | None = None
) -> dict[str, Any]:
    if form is None:
        policy = services.user_alert_policy_get(organization=organization)
        form = UserAlertPolicyForm(
            organization=organization,
            prefix="user_alerts",
            initial={
                "enabled": policy.enabled,
                "threshold": policy.threshold,
                "notify_user": policy.notify_user,
                "admins": list(policy.admins.select_related("user")) if policy.pk else [],
                "fire_if_already_exceeded": policy.quiet_period_start != period.start,
            },
        )
    return {"user_alert_form": form, "already_past": _already_past(organization, period, form)}


def _user_limits_context(
    organization: Organization, form: LimitPolicyForm | None = None
) -> dict[str, Any]:
    if form is None:
        policy = limit_policy_get(organization=organization)
        form = LimitPolicyForm(
            organization=organization,
            prefix="user_limits",
            initial={
                "enabled": policy.enabled,
                "default_limit": policy.default_limit,
                "admins": list(policy.admins.select_related("user")) if policy.pk else [],
                "exclude_agent_external": Source.AGENT_EXTERNAL in policy.excluded_sources,
                "exclude_workflows": Source.WORKFLOW in policy.excluded_sources,
            },
        )
    return {"limit_form": form}


def _custom_limits_context(
    organization: Organization,
    page: str | None = None,
    custom_limit_form: CustomLimitForm | None = None,
) -> dict[str, Any]:
    rows = custom_limits_list(organization=organization).order_by(
        member_name_expression("membership__"), "membership__user__email"
    )
    return {
        "custom_limits": _page(rows, page),
        "custom_limit_form": custom_limit_form
        or CustomLimitForm(organization=organization, prefix="custom_limit"),
    }


def _exceeding_context(
    organization: Organization, period: Period, page: str | None = None
) -> dict[str, Any]:
    policy = limit_policy_get(organization=organization)
    rows = members_over_budget(organization=organization, period=period, policy=policy)
    return {
        "exceeding": _page(rows.order_by("limit_reached_at", "id"), page),
        "limits_enabled": policy.enabled,
    }


def _history_context(organization: Organization, period: Period) -> dict[str, Any]:
    return {
        "firings": list(firings_of_period(organization=organization, period=period)[:HISTORY_SIZE])
    }


def _section_context(
    request: OrganizationHttpRequest, section: str, **forms: Any
) -> dict[str, Any]:
    organization = request.membership.organization
    period = current_period(organization)
    base = {"organization": organization, "period": period}
    if section == ORGANIZATION_ALERTS:
        return base | _organization_alerts_context(organization, period)
    if section == USER_ALERTS:
        return base | _user_alerts_context(organization, period, forms.get("user_alert_form"))
    if section in (USER_LIMITS, CUSTOM_LIMITS):
        context = base | _custom_limits_context(
            organization, request.GET.get("custom_page"), forms.get("custom_limit_form")
        )
        if section == USER_LIMITS:
            context |= _user_limits_context(organization, forms.get("limit_form"))
        return context
    if section == EXCEEDING:
        return base | _exceeding_context(organization, period, request.GET.get("exceeding_page"))
    if section == HISTORY:
        return base | _history_context(organization, period)
    raise ValueError(f"unknown section {section!r}")


def _render_section(
    request: OrganizationHttpRequest,
    section: str,
    *,
    oob: bool = False,
    status: int = 200,
    **forms: Any,
) -> HttpResponse:
    context = _section_context(request, section, **forms) | {"oob": oob}
    return render(request, SECTION_TEMPLATES[section], context, status=status)


def _page_response(
    request: OrganizationHttpRequest, *, status: int = 200, **forms: Any
) -> HttpResponse:
    """The whole page; bound forms given in `forms` show in place of fresh ones."""
    organization = request.membership.organization
    period = current_period(organization)
    context: dict[str, Any] = {
        "organization": organization,
        "period": period,
        "period_allowance": period.allowance(organization.credit_allowance),
        "next_period": current_period(organization, now=period.end),
        "used": organization_used(organization=organization, period=period),
        "section_templates": SECTION_TEMPLATES,
    }
    for section in SECTION_TEMPLATES:
        if section != CUSTOM_LIMITS:  # shown inside the per-user limits section
            context |= _section_context(request, section, **forms)
    return render(request, "alerts/limits_settings.html", context, status=status)


@require_http_methods(["GET"])
@admin_required
def limits_settings(request: OrganizationHttpRequest) -> HttpResponse:
    # Pagination links of a list ask for just that list (htmx names it as the target).
    if request.htmx and request.htmx.target in (EXCEEDING, CUSTOM_LIMITS):
        return _render_section(request, request.htmx.target)
    # The Credit Usage Alerts form asks, as it is filled in, who saving it would email now.
    if request.htmx and request.htmx.target == USER_ALERTS_ALREADY_PAST:
        organization = request.membership.organization
        form = UserAlertPolicyForm(request.GET, organization=organization, prefix="user_alerts")
        return render(
            request,
            "alerts/_user_alerts_already_past.html",
            {"already_past": _already_past(organization, current_period(organization), form)},
        )
    return _page_response(request)


# Writes: answers shared by every form


def _done(request: OrganizationHttpRequest, message: str, *sections: str) -> HttpResponse:
    """A change was made: the sections it moved, out of band, and a message."""
    return change_done(
        request,
        message,
        page="limits_settings",
        sections=lambda: "".join(
            render_to_string(
                SECTION_TEMPLATES[section],
                _section_context(request, section) | {"oob": True},
                request=request,
            )
            for section in sections
        ),
    )


def _dialog(
    request: OrganizationHttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """A form shown in the page's dialog; without htmx, on a page of its own."""
    context = {"organization": request.membership.organization} | context
    if request.htmx:
        return render(request, template, context, status=status)
    return render(
        request, "alerts/dialog_page.html", context | {"dialog_template": template}, status=status
    )


def _alert_for(request: OrganizationHttpRequest, alert_id: int) -> OrganizationAlert:
    """An alert of the request's organization, or 404: tenancy in one place."""
    alert = organization_alert_get(organization=request.membership.organization, alert_id=alert_id)
    if alert is None:
        raise Http404("No such alert in this organization.")
    return alert


def _custom_limit_for(request: OrganizationHttpRequest, membership_id: int) -> CustomLimit:
    custom_limit = (
        custom_limits_list(organization=request.membership.organization)
        .filter(membership_id=membership_id)
        .first()
    )
    if custom_limit is None:
        raise Http404("No custom limit for this member.")
    return custom_limit


# Organization alerts


@require_http_methods(["GET", "POST"])
@admin_required
def alert_add(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = OrganizationAlertForm(
        request.POST or None, organization=organization, editing=False, prefix="alert"
    )
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.alert_create(
                organization=organization,
                threshold_type=data["threshold_type"],
                threshold=data["threshold"],
                notify=data["notify"],
                admins=list(data["admins"]),
                fire_if_already_exceeded=data["fire_if_already_exceeded"],
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            return _done(request, "Alert added.", ORGANIZATION_ALERTS, HISTORY)
    status = 422 if form.is_bound else 200
    return _dialog(request, "alerts/_alert_form.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
@admin_required
def alert_edit(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    alert = _alert_for(request, alert_id)
    organization = request.membership.organization
    initial = {
        "threshold_type": alert.threshold_type,
        "threshold": alert.threshold,
        "notify": alert.notify,
        "admins": list(alert.admins.all()),
    }
    form = OrganizationAlertForm(
        request.POST or None,
        organization=organization,
        editing=True,
        prefix="alert",
        initial=initial,
    )
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.alert_update(
                alert=alert,
                threshold_type=data["threshold_type"],
                threshold=data["threshold"],
                notify=data["notify"],
                admins=list(data["admins"]) if data["notify"] == Recipients.SPECIFIC_ADMINS else [],
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            return _done(request, "Alert saved.", ORGANIZATION_ALERTS, HISTORY)
    status = 422 if form.is_bound else 200
    return _dialog(
        request, "alerts/_alert_form.html", {"form": form, "alert": alert}, status=status
    )


@require_http_methods(["GET", "POST"])
@admin_required
def alert_delete(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    alert = _alert_for(request, alert_id)
    if request.method == "POST":
        services.alert_delete(alert=alert)
        return _done(request, "Alert deleted.", ORGANIZATION_ALERTS)
    return _dialog(
        request,
        "alerts/_confirm_delete.html",
        {
            "title": "Delete alert",
            "question": f"Delete the alert at {_alert_label(alert)}? "
            "Its past firings stay in the history.",
            "action": request.path,
        },
    )


def _alert_label(alert: OrganizationAlert) -> str:
    if alert.threshold_type == "percentage":
        return f"{format_credits(alert.threshold)}% of the allowance"
    return f"{format_credits(alert.threshold)} credits"


# Per-user credit usage alerts and limits


@require_http_methods(["POST"])
@admin_required
def user_alerts_save(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = UserAlertPolicyForm(request.POST, organization=organization, prefix="user_alerts")
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.user_alert_policy_update(
                organization=organization,
                enabled=data["enabled"],
                threshold=data["threshold"],
                clear_threshold=data["threshold"] is None,
                notify_user=data["notify_user"],
                admins=list(data["admins"]),
                fire_if_already_exceeded=data["fire_if_already_exceeded"],
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            return _done(request, "Credit usage alerts saved.", USER_ALERTS, HISTORY)
    return _invalid_section(request, USER_ALERTS, user_alert_form=form)


def _invalid_section(request: OrganizationHttpRequest, section: str, **forms: Any) -> HttpResponse:
    if request.htmx:
        return _render_section(request, section, status=422, **forms)
    return _page_response(request, status=422, **forms)


@require_http_methods(["POST"])
@admin_required
def user_limits_save(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = LimitPolicyForm(request.POST, organization=organization, prefix="user_limits")
    if form.is_valid():
        data = form.cleaned_data
        try:
            limit_policy_update(
                organization=organization,
                enabled=data["enabled"],
                default_limit=data["default_limit"],
                clear_default_limit=data["default_limit"] is None,
                admins=list(data["admins"]),
                excluded_sources=form.excluded_sources,
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            return _done(request, "Per-user credit limits saved.", USER_LIMITS, EXCEEDING, HISTORY)
    return _invalid_section(request, USER_LIMITS, limit_form=form)


@require_http_methods(["POST"])
@admin_required
def custom_limit_add(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = CustomLimitForm(request.POST, organization=organization, prefix="custom_limit")
    if form.is_valid():
        member = form.chosen_member
        custom_limit_set(
            organization=organization,
            membership=member,
            limit=None if form.cleaned_data["unlimited"] else form.cleaned_data["credit_limit"],
        )
        return _done(
            request,
            f"Custom limit set for {member.display_name}.",
            CUSTOM_LIMITS,
            EXCEEDING,
            HISTORY,
        )
    return _invalid_section(request, CUSTOM_LIMITS, custom_limit_form=form)


@require_http_methods(["GET", "POST"])
@admin_required
def custom_limit_edit(request: OrganizationHttpRequest, membership_id: int) -> HttpResponse:
    custom_limit = _custom_limit_for(request, membership_id)
    organization = request.membership.organization
    form = CustomLimitForm(
        request.POST or None,
        organization=organization,
        membership=custom_limit.membership,
        prefix="edit_limit",
        initial={"credit_limit": custom_limit.limit, "unlimited": custom_limit.limit is None},
    )
    if form.is_valid():
        custom_limit_set(
            organization=organization,
            membership=custom_limit.membership,
            limit=None if form.cleaned_data["unlimited"] else form.cleaned_data["credit_limit"],
        )
        name = custom_limit.membership.display_name
        return _done(request, f"Custom limit of {name} saved.", CUSTOM_LIMITS, EXCEEDING, HISTORY)
    status = 422 if form.is_bound else 200
    return _dialog(
        request,
        "alerts/_custom_limit_form.html",
        {"form": form, "member": custom_limit.membership},
        status=status,
    )


@require_http_methods(["GET", "POST"])
@admin_required
def custom_limit_remove(request: OrganizationHttpRequest, membership_id: int) -> HttpResponse:
    custom_limit = _custom_limit_for(request, membership_id)
    name = custom_limit.membership.display_name
    if request.method == "POST":
        custom_limit_delete(custom_limit=custom_limit)
        return _done(
            request,
            f"Custom limit of {name} removed: the default limit applies.",
            CUSTOM_LIMITS,
            EXCEEDING,
            HISTORY,
        )
    return _dialog(
        request,
        "alerts/_confirm_delete.html",
        {
            "title": "Remove custom limit",
            "question": f"Remove the custom limit of {name}? The default limit will apply to them.",
            "action": request.path,
            "confirm_label": "Remove",
        },
    )
