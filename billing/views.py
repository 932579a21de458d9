from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.models import Organization
from accounts.web import OrganizationHttpRequest, admin_required, organization_required
from billing.balance import allowance_left, balance_now
from billing.forms import AssistantForm
from billing.models import Source
from billing.money import money_this_period
from billing.periods import Period
from billing.rules import gate_decide, over_budget
from billing.selectors import (
    DayUsage,
    current_period,
    daily_usage_list,
    limit_rules_get,
    limit_rules_get_for_all_members,
    member_usage_get,
    members_with_usage_list,
    organization_used,
    period_days,
    usage_by_source,
)
from billing.web import GatedHttpRequest, blocked_notice_context, credit_gate, wants_fragment
from config.credits import CREDIT_QUANTUM, format_credits, percent_of

ASSISTANT_COST = Decimal(5)
TOP_USERS = 10
EXPORT_COLUMNS = ("user", "email", "used", "counted", "limit")
# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
SPREADSHEET_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@require_http_methods(["GET"])
@admin_required
def usage_monitor(request: OrganizationHttpRequest) -> HttpResponse:
    """Monitor usage: this period against the allowance, per day, top users
    and per source. A constant number of queries, whatever the number of
    members: every figure comes from the totals.
    """
    organization = request.membership.organization
    now = timezone.now()
    period = current_period(organization, now=now)
    allowance = period.allowance(organization.credit_allowance)
    used = organization_used(organization=organization, period=period)
    percent = percent_of(used, allowance)
    members_with_usage = members_with_usage_list(organization=organization, period=period)
    top_rows = list(members_with_usage[:TOP_USERS])
    rules = limit_rules_get(
        organization=organization, membership_ids=[row.membership_id for row in top_rows]
    )
    today = now.date()  # timezone.now() is in UTC, the time zone of the daily totals
    days = daily_usage_list(organization=organization, period=period, until=today)
    context: dict[str, Any] = {
        "organization": organization,
        "period": period,
        "used": used,
        "allowance": format_credits(allowance) if allowance is not None else None,
        "remaining": None if allowance is None else max(allowance - used, Decimal(0)),
        "percent": percent,
        "bar_percent": min(percent or 0, 100),
        "exhausted": over_budget(used, allowance),
        "members_with_usage": members_with_usage.count(),
        "top_users_max": TOP_USERS,
        "top_users": [
            {"row": row, "limit": rules.limit_for(row.membership_id)} for row in top_rows
        ],
        "sources": _usage_by_source(organization=organization, period=period),
        "days": days,
        "days_total": sum((day.used for day in days), Decimal(0)),
        "chart": _chart_data(period=period, days=days),
        "money": money_this_period(organization=organization, now=now),
    }
    return render(request, "billing/usage_monitor.html", context)


def _usage_by_source(*, organization: Organization, period: Period) -> list[dict[str, Any]]:
    """Every source, in the order of `Source`, with its share of the period's usage."""
    by_source = usage_by_source(organization=organization, period=period)
    total = sum(by_source.values(), Decimal(0))
    return [
        {
            "source": source,
            "used": by_source.get(source.value, Decimal(0)),
            "percent": percent_of(by_source.get(source.value, Decimal(0)), total or None) or 0,
        }
        for source in Source
    ]


def _chart_data(*, period: Period, days: list[DayUsage]) -> dict[str, Any]:
    """What static/js/usage_chart.js draws: every day of the period on the
    axis, credits as exact decimal strings, None for the days still to come.
    """
    used_on = {day.day: format_credits(day.used) for day in days}
    all_days = period_days(period)
    return {
        "days": [day.isoformat() for day in all_days],
        "labels": [f"{day:%b} {day.day}" for day in all_days],
        "used": [used_on.get(day) for day in all_days],
    }


@require_http_methods(["GET"])
@admin_required
def usage_export(request: OrganizationHttpRequest) -> HttpResponse:
    """This period's usage per member as CSV (`user`, `email`, `used`,
    `counted`, `limit`; no limit: empty), the heaviest first: the limit
    rules, then one query for the rows, read in chunks.
    """
    organization = request.membership.organization
    period = current_period(organization)
    rules = limit_rules_get_for_all_members(organization=organization)
    filename = f"usage-{organization.slug}-{period.start:%Y-%m-%d}.csv"
    response = HttpResponse(
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    writer = csv.writer(response)
    writer.writerow(EXPORT_COLUMNS)
    rows = members_with_usage_list(organization=organization, period=period)
    for row in rows.iterator(chunk_size=2000):
        limit = rules.limit_for(row.membership_id)
        writer.writerow(
            [
                _spreadsheet_safe(row.membership.external_id),
                _spreadsheet_safe(row.membership.user.email),
                format_credits(row.used),
                format_credits(row.counted),
                "" if limit is None else format_credits(limit),
            ]
        )
    return response


def _spreadsheet_safe(value: str) -> str:
    """Quote a cell a spreadsheet would run as a formula (OWASP's CSV injection advice)."""
    return f"'{value}" if value.startswith(SPREADSHEET_FORMULA_STARTS) else value


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
    allowance = period.allowance(organization.credit_allowance)
    # Over budget means even the smallest action would be refused: the gate's
    # own rule, asked for one quantum, gives the notice a member would get.
    balance = balance_now(
        organization=organization, period=period, used=organization_used_now, now=timezone.now()
    )
    standing = gate_decide(
        cost=CREDIT_QUANTUM,
        counts=True,
        member_counted=counted,
        member_limit=limit,
        organization_used_now=organization_used_now,
        balance=balance,
        block_when_exhausted=organization.block_when_exhausted,
        period=period,
    )
    percent = percent_of(counted, limit)
    organization_percent = percent_of(organization_used_now, allowance)
    context: dict[str, Any] = {
        "organization": organization,
        "period": period,
        "used": used,
        "counted": counted,
        "limit": limit,
        "remaining": None if limit is None else max(limit - counted, Decimal(0)),
        "limit_used_up": over_budget(counted, limit),
        "percent": percent,
        "bar_percent": min(percent or 0, 100),
        "excluded_sources": [Source(source).label for source in sorted(rules.excluded_sources)]
        if limit is not None
        else [],
        "organization_used": organization_used_now,
        "allowance": allowance,
        "organization_percent": organization_percent,
        "organization_bar_percent": min(organization_percent or 0, 100),
        "organization_exhausted": over_budget(organization_used_now, allowance),
        "blocked": not standing.allowed,
        "balance": _balance_limiting(organization, allowance, organization_used_now, balance),
    }
    if not standing.allowed:
        context |= blocked_notice_context(organization=organization, decision=standing)
    return render(request, "billing/my_usage.html", context)


def _balance_limiting(
    organization: Organization,
    allowance: Decimal | None,
    used: Decimal,
    balance: Decimal | None,
) -> dict[str, Decimal] | None:
    """The organization's credit balance, as the gate just read it, when it
    limits its members: the organization blocks and keeps a balance (it has
    had grants, balance alerts or a top-up; an allowance alone is shown as
    the allowance). Split into what is left of the allowance and of the grants.
    """
    if (
        balance is None
        or not organization.block_when_exhausted
        or organization.credit_balance_kept_since is None
    ):
        return None
    from_allowance = allowance_left(allowance, used)
    return {"total": balance, "allowance": from_allowance, "grants": balance - from_allowance}
