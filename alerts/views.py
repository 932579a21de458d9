"""The Limits & Alerts page (SPEC §6), for admins.

One page with six sections. Every change is a form posted by htmx: a bad
one comes back as the form with its errors (422); a good one answers with
the sections it changed, swapped out of band, a message in the status
region and `closeDialog`. Without JavaScript the same URLs work as plain
pages: a good form redirects back to the page, a bad one shows its errors.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_http_methods

from accounts.models import Organization
from accounts.web import OrganizationHttpRequest, admin_required, change_done, found_or_404
from alerts.forms import (
    BillingThresholdForm,
    CustomLimitForm,
    LimitPolicyForm,
    OrganizationAlertForm,
    UserAlertPolicyForm,
)
from alerts.models import MONEY_THRESHOLD_TYPES, OrganizationAlert, Recipients, ThresholdType
from alerts.sections import (
    BILLING_THRESHOLD,
    CUSTOM_LIMITS,
    EXCEEDING,
    HISTORY,
    ORGANIZATION_ALERTS,
    SECTION_TEMPLATES,
    USER_ALERTS,
    USER_ALERTS_ALREADY_PAST,
    USER_LIMITS,
    already_past,
    page_response,
    render_section,
    section_context,
)
from alerts.selectors import (
    organization_alert_get,
)
from alerts.services import configuration, invoicing, plan_alerts
from alerts.services.changes import custom_limit_delete, custom_limit_set, limit_policy_update
from billing.models import CustomLimit
from billing.selectors import (
    current_period,
    custom_limits_list,
)
from config.credits import format_credits
from config.forms import form_saved
from config.money import readable_money


@require_http_methods(["GET"])
@admin_required
def limits_settings(request: OrganizationHttpRequest) -> HttpResponse:
    # Pagination links of a list ask for just that list (htmx names it as the target).
    if request.htmx and request.htmx.target in (EXCEEDING, CUSTOM_LIMITS):
        return render_section(request, request.htmx.target)
    # The Credit Usage Alerts form asks, as it is filled in, who saving it would email now.
    if request.htmx and request.htmx.target == USER_ALERTS_ALREADY_PAST:
        organization = request.membership.organization
        form = UserAlertPolicyForm(request.GET, organization=organization, prefix="user_alerts")
        return render(
            request,
            "alerts/_user_alerts_already_past.html",
            {
                "already_past": already_past(
                    organization,
                    current_period(organization),
                    form,
                    configuration.user_alert_policy_get(organization=organization),
                )
            },
        )
    return page_response(request)


# Writes: answers shared by every form


def limits_done(request: OrganizationHttpRequest, message: str, *sections: str) -> HttpResponse:
    """A change was made: the sections it moved, out of band, and a message."""
    return change_done(
        request,
        message,
        page="limits_settings",
        sections=lambda: "".join(
            render_to_string(
                SECTION_TEMPLATES[section],
                section_context(request, section) | {"oob": True},
                request=request,
            )
            for section in sections
        ),
    )


def limits_dialog(
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
    return found_or_404(
        organization_alert_get(organization=request.membership.organization, alert_id=alert_id),
        "No such alert in this organization.",
    )


def _custom_limit_for(request: OrganizationHttpRequest, membership_id: int) -> CustomLimit:
    return found_or_404(
        custom_limits_list(organization=request.membership.organization)
        .filter(membership_id=membership_id)
        .first(),
        "No custom limit for this member.",
    )


# Organization alerts


@require_http_methods(["GET", "POST"])
@admin_required
def alert_add(request: OrganizationHttpRequest) -> HttpResponse:
    return _alert_form(request, alert=None)


@require_http_methods(["GET", "POST"])
@admin_required
def alert_edit(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    return _alert_form(request, alert=_alert_for(request, alert_id))


def _alert_form(
    request: OrganizationHttpRequest, *, alert: OrganizationAlert | None
) -> HttpResponse:
    """The form that adds an alert (`alert` None) or edits one."""
    organization = request.membership.organization
    form = OrganizationAlertForm(
        request.POST or None,
        organization=organization,
        editing=alert is not None,
        prefix="alert",
        initial={} if alert is None else _alert_initial(alert),
    )
    if form_saved(form, lambda data: _alert_save(organization, alert, data)):
        done = "Alert added." if alert is None else "Alert saved."
        return limits_done(request, done, ORGANIZATION_ALERTS, HISTORY)
    status = 422 if form.is_bound else 200
    return limits_dialog(
        request, "alerts/_alert_form.html", {"form": form, "alert": alert}, status=status
    )


def _alert_save(
    organization: Organization, alert: OrganizationAlert | None, data: dict[str, Any]
) -> None:
    chosen = {
        "threshold_type": data["threshold_type"],
        "threshold": data["threshold"],
        "notify": data["notify"],
        "admins": list(data["admins"]) if data["notify"] == Recipients.SPECIFIC_ADMINS else [],
    }
    if alert is None:
        configuration.alert_create(
            organization=organization,
            fire_if_already_exceeded=data["fire_if_already_exceeded"],
            **chosen,
        )
    else:
        configuration.alert_update(alert=alert, **chosen)


def _alert_initial(alert: OrganizationAlert) -> dict[str, Any]:
    return {
        "threshold_type": alert.threshold_type,
        "threshold": alert.threshold,
        "notify": alert.notify,
        "admins": list(alert.admins.all()),
    }


@require_http_methods(["GET", "POST"])
@admin_required
def alert_delete(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    alert = _alert_for(request, alert_id)
    if alert.plan_alert_id is not None:
        # Offered to be turned off instead; a POST to delete it is a conflict.
        status = 409 if request.method == "POST" else 200
        return limits_dialog(
            request, "alerts/_inherited_alert_delete.html", {"alert": alert}, status=status
        )
    if request.method == "POST":
        configuration.alert_delete(alert=alert)
        return limits_done(request, "Alert deleted.", ORGANIZATION_ALERTS)
    return limits_dialog(
        request,
        "alerts/_confirm_delete.html",
        {
            "title": "Delete alert",
            "question": f"Delete the alert at {_alert_label(alert)}? "
            "Its past firings stay in the history.",
            "action": request.path,
        },
    )


@require_http_methods(["POST"])
@admin_required
def alert_switch(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    """Turn an alert off (it never fires) or on again: `enabled` says which."""
    alert = _alert_for(request, alert_id)
    wanted = request.POST.get("enabled")
    if wanted not in ("true", "false"):
        return HttpResponseBadRequest("Say enabled=true or enabled=false.")
    configuration.alert_update(alert=alert, enabled=wanted == "true")
    done = "Alert turned on." if wanted == "true" else "Alert turned off."
    return limits_done(request, done, ORGANIZATION_ALERTS, HISTORY)


@require_http_methods(["POST"])
@admin_required
def alert_reset(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    """An alert inherited from the plan, changed here, takes the plan's again."""
    alert = _alert_for(request, alert_id)
    if alert.plan_alert_id is None:
        return HttpResponseBadRequest("This alert is the organization's own.")
    plan_alerts.inherited_alert_reset(alert=alert)
    return limits_done(request, "Alert reset to the plan's.", ORGANIZATION_ALERTS, HISTORY)


def _alert_label(alert: OrganizationAlert) -> str:
    if alert.threshold_type in MONEY_THRESHOLD_TYPES:
        amount = readable_money(alert.threshold, alert.organization.currency)
        return f"{amount} of {alert.get_threshold_type_display().lower()}"
    if alert.threshold_type == ThresholdType.FORECAST:
        return f"a forecast of {format_credits(alert.threshold)}% of the allowance"
    if alert.threshold_type == ThresholdType.PERCENTAGE:
        return f"{format_credits(alert.threshold)}% of the allowance"
    return f"{format_credits(alert.threshold)} credits"


# Per-user credit usage alerts and limits


@require_http_methods(["POST"])
@admin_required
def user_alerts_save(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = UserAlertPolicyForm(request.POST, organization=organization, prefix="user_alerts")
    if form_saved(
        form,
        lambda data: configuration.user_alert_policy_update(
            organization=organization,
            enabled=data["enabled"],
            threshold=data["threshold"],
            clear_threshold=data["threshold"] is None,
            notify_user=data["notify_user"],
            admins=list(data["admins"]),
            fire_if_already_exceeded=data["fire_if_already_exceeded"],
        ),
    ):
        return limits_done(request, "Credit usage alerts saved.", USER_ALERTS, HISTORY)
    return _invalid_section(request, USER_ALERTS, user_alert_form=form)


def _invalid_section(request: OrganizationHttpRequest, section: str, **forms: Any) -> HttpResponse:
    if request.htmx:
        return render_section(request, section, status=422, **forms)
    return page_response(request, status=422, **forms)


@require_http_methods(["POST"])
@admin_required
def user_limits_save(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = LimitPolicyForm(request.POST, organization=organization, prefix="user_limits")
    if form_saved(
        form,
        lambda data: limit_policy_update(
            organization=organization,
            enabled=data["enabled"],
            default_limit=data["default_limit"],
            clear_default_limit=data["default_limit"] is None,
            admins=list(data["admins"]),
            excluded_sources=form.excluded_sources,
        ),
    ):
        return limits_done(
            request, "Per-user credit limits saved.", USER_LIMITS, EXCEEDING, HISTORY
        )
    return _invalid_section(request, USER_LIMITS, limit_form=form)


@require_http_methods(["POST"])
@admin_required
def custom_limit_add(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = CustomLimitForm(request.POST, organization=organization, prefix="custom_limit")
    if form.is_valid():
        member = form.chosen_member
        custom_limit_set(organization=organization, membership=member, limit=form.chosen_limit)
        return limits_done(
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
            organization=organization, membership=custom_limit.membership, limit=form.chosen_limit
        )
        name = custom_limit.membership.display_name
        return limits_done(
            request, f"Custom limit of {name} saved.", CUSTOM_LIMITS, EXCEEDING, HISTORY
        )
    status = 422 if form.is_bound else 200
    return limits_dialog(
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
        return limits_done(
            request,
            f"Custom limit of {name} removed: the default limit applies.",
            CUSTOM_LIMITS,
            EXCEEDING,
            HISTORY,
        )
    return limits_dialog(
        request,
        "alerts/_confirm_delete.html",
        {
            "title": "Remove custom limit",
            "question": f"Remove the custom limit of {name}? The default limit will apply to them.",
            "action": request.path,
            "confirm_label": "Remove",
        },
    )


# Threshold invoicing


@require_http_methods(["POST"])
@admin_required
def billing_threshold_save(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = BillingThresholdForm(request.POST, organization=organization, prefix="billing_threshold")
    if form_saved(
        form,
        lambda data: invoicing.billing_threshold_set(
            organization=organization,
            settings=invoicing.BillingThresholdInput(
                enabled=data["enabled"], amount=data["amount"]
            ),
        ),
    ):
        return limits_done(request, "Billing threshold saved.", BILLING_THRESHOLD)
    return _invalid_section(request, BILLING_THRESHOLD, billing_threshold_form=form)
