from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts.web import OrganizationHttpRequest, admin_required, organization_required
from billing.credits import CREDIT_QUANTUM, format_credits
from billing.forms import AssistantForm
from billing.models import Source
from billing.selectors import current_period, limit_rules_get, member_usage_get, organization_used
from billing.services import gate_decide
from billing.web import GatedHttpRequest, blocked_notice_context, credit_gate, wants_fragment

ASSISTANT_COST = Decimal(5)


@require_http_methods(["GET"])
@admin_required
def usage_monitor(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    allowance = organization.credit_allowance
    return render(
        request,
        "billing/usage_monitor.html",
        {
            "organization": organization,
            "allowance": format_credits(allowance) if allowance is not None else None,
        },
    )


def _assistant_cost(request: OrganizationHttpRequest) -> Decimal | None:
    """A run costs a fixed amount; an invalid prompt is not a run and costs nothing."""
    return ASSISTANT_COST if AssistantForm(request.POST).is_valid() else None


@require_http_methods(["GET", "POST"])
@organization_required
@credit_gate(cost=_assistant_cost, source=Source.ASSISTANT)
def assistant(request: GatedHttpRequest) -> HttpResponse:
    """The demo of a credit-consuming action: each run goes through the gate."""
    form = AssistantForm(request.POST if request.method == "POST" else None)
    context: dict[str, Any] = {"form": form, "cost": ASSISTANT_COST}
    if request.credit_decision is not None and form.is_valid():
        context |= {
            "decision": request.credit_decision,
            "prompt": form.cleaned_data["prompt"],
        }
    if request.method == "POST" and wants_fragment(request):
        return render(request, "billing/assistant.html#result", context)
    return render(request, "billing/assistant.html", context)


def _percent(value: Decimal, of: Decimal | None) -> int | None:
    """Whole percent, rounded down, so 99.9% never reads as 100%."""
    if of is None:
        return None
    return int(value * 100 / of)


@require_http_methods(["GET"])
@organization_required
def my_usage(request: OrganizationHttpRequest) -> HttpResponse:
    membership = request.membership
    organization = membership.organization
    period = current_period(organization)
    rules = limit_rules_get(organization=organization, membership_ids=[membership.pk])
    limit = rules.limit_for(membership.pk)
    used, counted = member_usage_get(membership=membership, period=period)
    organization_used_now = organization_used(organization=organization, period=period)
    allowance = organization.credit_allowance
    # Over budget means even the smallest action would be refused: the gate's
    # own rule, asked for one quantum, gives the notice a member would get.
    standing = gate_decide(
        cost=CREDIT_QUANTUM,
        counts=True,
        member_counted=counted,
        member_limit=limit,
        organization_used_now=organization_used_now,
        allowance=allowance,
        block_when_exhausted=organization.block_when_exhausted,
        period=period,
    )
    percent = _percent(counted, limit)
    organization_percent = _percent(organization_used_now, allowance)
    context: dict[str, Any] = {
        "organization": organization,
        "period": period,
        "used": used,
        "counted": counted,
        "limit": limit,
        "remaining": None if limit is None else max(limit - counted, Decimal(0)),
        "percent": percent,
        "bar_percent": min(percent or 0, 100),
        "excluded_sources": [Source(source).label for source in sorted(rules.excluded_sources)]
        if limit is not None
        else [],
        "organization_used": organization_used_now,
        "allowance": allowance,
        "organization_percent": organization_percent,
        "organization_bar_percent": min(organization_percent or 0, 100),
        "organization_exhausted": allowance is not None and organization_used_now >= allowance,
        "blocked": not standing.allowed,
    }
    if not standing.allowed:
        context |= blocked_notice_context(organization=organization, decision=standing)
    return render(request, "billing/my_usage.html", context)
