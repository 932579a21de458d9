"""The Limits & Alerts page's sections: what each shows, the whole page,
and one section alone (an htmx swap). The forms that change them are
alerts/views.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpResponse
from django.shortcuts import render

from accounts.models import Organization
from accounts.selectors import member_name_expression
from accounts.web import OrganizationHttpRequest
from alerts.forms import (
    BillingThresholdForm,
    CustomLimitForm,
    LimitPolicyForm,
    UserAlertPolicyForm,
)
from alerts.models import MAX_ORGANIZATION_ALERTS, UserAlertPolicy
from alerts.selectors import (
    alerts_with_status,
    firings_of_period,
    members_past_user_alert_threshold,
    organization_alerts,
    pending_limit_requests,
)
from alerts.services import configuration, invoicing
from billing.invoices import threshold_and_invoices_of_period
from billing.models import BillingThreshold, Source, UserLimitPolicy
from billing.periods import Period
from billing.selectors import (
    current_period,
    custom_limits_list,
    limit_policy_get,
    members_over_budget,
    organization_used,
)

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
BILLING_THRESHOLD = "billing-threshold"
LIMIT_REQUESTS = "limit-requests"
SECTION_TEMPLATES = {
    LIMIT_REQUESTS: "alerts/_limit_requests.html",
    ORGANIZATION_ALERTS: "alerts/_organization_alerts.html",
    USER_ALERTS: "alerts/_user_alerts.html",
    USER_LIMITS: "alerts/_user_limits.html",
    CUSTOM_LIMITS: "alerts/_custom_limits.html",
    EXCEEDING: "alerts/_users_exceeding.html",
    HISTORY: "alerts/_alert_history.html",
    BILLING_THRESHOLD: "alerts/_billing_threshold.html",
}


def _page(items: Any, number: str | None) -> Page[Any]:
    return Paginator(items, PAGE_SIZE).get_page(number)


def _organization_alerts_context(organization: Organization, period: Period) -> dict[str, Any]:
    alerts = list(organization_alerts(organization=organization))
    return {
        "alert_rows": alerts_with_status(organization=organization, alerts=alerts, period=period),
        "max_alerts": MAX_ORGANIZATION_ALERTS,
        # The page adds alerts on credits; the cap is per meter (SPEC §10).
        "can_add_alert": sum(1 for alert in alerts if alert.meter_id is None)
        < MAX_ORGANIZATION_ALERTS,
    }


@dataclass(frozen=True)
class AlreadyPast:
    """What saving the Credit Usage Alerts form would do to the members
    already past its threshold, said before saving (the note under the field).
    """

    count: int  # past the threshold and not told yet: whom saving would email
    past: int  # past the threshold, told or not
    threshold: Decimal
    enabled: bool
    notify_user: bool
    admins_chosen: bool
    fire_at_once: bool


def already_past(
    organization: Organization, period: Period, form: UserAlertPolicyForm, policy: UserAlertPolicy
) -> AlreadyPast | None:
    """From the form as it stands (typed, posted or as saved) against the
    policy as saved; None without a threshold.
    """
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
    # A new threshold is a new arming: nobody has been told at it yet.
    generation = policy.generation if threshold == policy.threshold else policy.generation + 1
    past, untold = members_past_user_alert_threshold(
        organization=organization, period=period, threshold=threshold, generation=generation
    )
    return AlreadyPast(
        count=untold,
        past=past,
        threshold=threshold,
        enabled=bool(values.get("enabled")),
        notify_user=bool(values.get("notify_user")),
        admins_chosen=bool(values.get("admins")),
        fire_at_once=bool(values.get("fire_if_already_exceeded")),
    )


def _user_alerts_context(
    organization: Organization, period: Period, form: UserAlertPolicyForm | None = None
) -> dict[str, Any]:
    policy = configuration.user_alert_policy_get(organization=organization)
    if form is None:
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
    return {
        "user_alert_form": form,
        "already_past": already_past(organization, period, form, policy),
    }


def _user_limits_context(
    organization: Organization, policy: UserLimitPolicy, form: LimitPolicyForm | None = None
) -> dict[str, Any]:
    if form is None:
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
    organization: Organization, period: Period, policy: UserLimitPolicy, page: str | None = None
) -> dict[str, Any]:
    rows = members_over_budget(organization=organization, period=period, policy=policy)
    return {
        "exceeding": _page(rows.order_by("limit_reached_at", "id"), page),
        "limits_enabled": policy.enabled,
    }


def _limit_requests_context(
    organization: Organization, period: Period, policy: UserLimitPolicy
) -> dict[str, Any]:
    """Pending requests (SPEC §14) with each member's usage and limit now:
    one query (the policy is the page's).
    """
    if policy.pk is not None:
        default = policy.default_limit if policy.enabled else None
    else:
        default = organization.plan.default_limit if organization.plan else None
    rows = pending_limit_requests(organization=organization, period=period)
    for row in rows:
        row.limit_now = row.custom_limit if row.has_custom_limit else default  # type: ignore[attr-defined]
    return {"limit_requests": rows}


def _history_context(organization: Organization, period: Period) -> dict[str, Any]:
    return {
        "firings": list(firings_of_period(organization=organization, period=period)[:HISTORY_SIZE])
    }


def _billing_threshold_context(
    organization: Organization, period: Period, form: BillingThresholdForm | None = None
) -> dict[str, Any]:
    threshold, invoices = threshold_and_invoices_of_period(organization=organization, period=period)
    if form is None:
        form = BillingThresholdForm(
            organization=organization,
            prefix="billing_threshold",
            initial=invoicing.billing_threshold_settings(
                threshold or BillingThreshold(organization=organization)
            ),
        )
    return {"billing_threshold_form": form, "invoices": invoices}


def section_context(
    request: OrganizationHttpRequest,
    section: str,
    *,
    limit_policy: UserLimitPolicy | None = None,
    **forms: Any,
) -> dict[str, Any]:
    """One section's context. The whole page passes what several sections
    read (`limit_policy`), so that it is read once.
    """
    organization = request.membership.organization
    if limit_policy is None and section in (USER_LIMITS, EXCEEDING, LIMIT_REQUESTS):
        limit_policy = limit_policy_get(organization=organization)
    period = current_period(organization)
    base = {"organization": organization, "period": period}
    if section == ORGANIZATION_ALERTS:
        return base | _organization_alerts_context(organization, period)
    if section == LIMIT_REQUESTS:
        assert limit_policy is not None
        return base | _limit_requests_context(organization, period, limit_policy)
    if section == USER_ALERTS:
        return base | _user_alerts_context(organization, period, forms.get("user_alert_form"))
    if section in (USER_LIMITS, CUSTOM_LIMITS):
        context = base | _custom_limits_context(
            organization, request.GET.get("custom_page"), forms.get("custom_limit_form")
        )
        if section == USER_LIMITS:
            assert limit_policy is not None
            context |= _user_limits_context(organization, limit_policy, forms.get("limit_form"))
        return context
    if section == EXCEEDING:
        assert limit_policy is not None
        return base | _exceeding_context(
            organization, period, limit_policy, request.GET.get("exceeding_page")
        )
    if section == HISTORY:
        return base | _history_context(organization, period)
    if section == BILLING_THRESHOLD:
        return base | _billing_threshold_context(
            organization, period, forms.get("billing_threshold_form")
        )
    raise ValueError(f"unknown section {section!r}")


def render_section(
    request: OrganizationHttpRequest,
    section: str,
    *,
    oob: bool = False,
    status: int = 200,
    **forms: Any,
) -> HttpResponse:
    context = section_context(request, section, **forms) | {"oob": oob}
    return render(request, SECTION_TEMPLATES[section], context, status=status)


def page_response(
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
    limit_policy = limit_policy_get(organization=organization)
    for section in SECTION_TEMPLATES:
        if section != CUSTOM_LIMITS:  # shown inside the per-user limits section
            context |= section_context(request, section, limit_policy=limit_policy, **forms)
    return render(request, "alerts/limits_settings.html", context, status=status)
