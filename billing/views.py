from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.models import Membership, Organization
from accounts.web import OrganizationHttpRequest, admin_required, organization_required
from billing.balance import allowance_left, balance_now
from billing.meter_selectors import (
    MeterDefinition,
    meter_daily_values,
    meter_totals_get,
    meters_list,
)
from billing.models import Aggregation, Source
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
from billing.web import blocked_notice_context
from config.credits import CREDIT_QUANTUM, format_credits, percent_of, readable_credits

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
    days_total = sum((day.used for day in days), Decimal(0))
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
        "days_total": days_total,
        "chart": _chart_data(period=period, days=days),
        "credits_chart_label": f"Bar chart of credits used per day from {_span(period)}: "
        f"{readable_credits(days_total)} credits so far. The same figures are in the table below.",
        "credits_chart_caption": f"Credits used per day, {_span(period)}",
        "meter_cards": meter_cards(organization=organization, period=period, today=today),
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


def _chart_data(
    *, period: Period, days: list[DayUsage], label: str = "Credits used", unit: str = "credits"
) -> dict[str, Any]:
    """What static/js/usage_chart.js draws: every day of the period on the
    axis, the figures as exact decimal strings, None for the days still to
    come; `label` names the bars and `unit` follows each figure in a tooltip.
    """
    used_on = {day.day: format_credits(day.used) for day in days}
    all_days = period_days(period)
    return {
        "days": [day.isoformat() for day in all_days],
        "labels": [f"{day:%b} {day.day}" for day in all_days],
        "used": [used_on.get(day) for day in all_days],
        "label": label,
        "unit": unit,
    }


def _span(period: Period) -> str:
    """June 1 to June 30, 2025: the period's days as the page writes them."""
    first, last = period.start, period.last_day
    return f"{first:%B} {first.day} to {last:%B} {last.day}, {last.year}"


# What each aggregation's card says its value is, and the per-day table's last row.
METER_VALUE_WORDS = {
    Aggregation.SUM: "Sum of the quantities reported this period",
    Aggregation.COUNT: "Events counted this period",
    Aggregation.MAX: "Largest quantity reported this period",
    Aggregation.UNIQUE_COUNT: "Distinct values of the property {property} this period",
}
METER_DAY_WORDS = {
    Aggregation.SUM: ("sum per day", "Total"),
    Aggregation.COUNT: ("events per day", "Total"),
    Aggregation.MAX: ("largest quantity each day", "Largest"),
}


def _figure(meter: MeterDefinition, value: Decimal) -> str:
    """Counts as whole numbers, quantities with every exact digit; thousands grouped."""
    return f"{int(value):,}" if meter.whole_numbers else readable_credits(value)


def meter_cards(*, organization: Organization, period: Period, today: date) -> list[dict[str, Any]]:
    """A card per meter of the platform (credits have the page's other cards):
    its value this period and, for sum, count and max, its values per day.
    Three queries, whatever the number of meters.
    """
    meters = [meter for meter in meters_list() if not meter.is_built_in]
    if not meters:
        return []
    totals = meter_totals_get(organization=organization, period=period, with_members=False)
    daily = meter_daily_values(organization=organization, period=period, meters=meters, until=today)
    cards = []
    for meter in meters:
        value = totals.organization_value(meter)
        card: dict[str, Any] = {
            "meter": meter,
            "value": _figure(meter, value),
            "value_words": METER_VALUE_WORDS[Aggregation(meter.aggregation)].format(
                property=meter.event_property
            ),
            "title_id": f"meter-{meter.key}-title",
            "chart_id": f"meter-chart-{meter.key}",
        }
        days = daily.get(meter.pk or 0)
        if days is not None:
            per_day, total_label = METER_DAY_WORDS[Aggregation(meter.aggregation)]
            figures = [day.used for day in days]
            total = (
                max(figures, default=Decimal(0))
                if meter.aggregation == Aggregation.MAX
                else sum(figures, Decimal(0))
            )
            card |= {
                "days": days,
                "chart": _chart_data(period=period, days=days, label=meter.name, unit=meter.unit),
                "heading": f"{meter.name} ({meter.unit})",
                "total_label": total_label,
                "total": total,
                "aria_label": f"Bar chart of {meter.name}, {per_day} in {meter.unit}, from "
                f"{_span(period)}. The same figures are in the table below.",
                "caption": f"{meter.name}, {per_day} in {meter.unit}, {_span(period)}",
            }
        cards.append(card)
    return cards


@require_http_methods(["GET"])
@admin_required
def usage_export(request: OrganizationHttpRequest) -> HttpResponse:
    """This period's usage per member as CSV (`user`, `email`, `used`,
    `counted`, `limit`; no limit: empty), the heaviest first, then a column
    per meter of the platform (its key; docs/meters.md) with the member's
    value. Members with meter values but no credits follow, by `user`. The
    limit rules, the meters and their values (when there are meters), then
    one query for the rows, read in chunks.
    """
    organization = request.membership.organization
    period = current_period(organization)
    rules = limit_rules_get_for_all_members(organization=organization)
    meters = [meter for meter in meters_list() if not meter.is_built_in]
    totals = (
        meter_totals_get(organization=organization, period=period, with_users=True)
        if meters
        else None
    )
    filename = f"usage-{organization.slug}-{period.start:%Y-%m-%d}.csv"
    response = HttpResponse(
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    writer = csv.writer(response)
    writer.writerow([*EXPORT_COLUMNS, *(export_column(meter.key) for meter in meters)])

    def write(membership: Membership, used: Decimal, counted: Decimal) -> None:
        limit = rules.limit_for(membership.pk)
        writer.writerow(
            [
                _spreadsheet_safe(membership.external_id),
                _spreadsheet_safe(membership.user.email),
                format_credits(used),
                format_credits(counted),
                "" if limit is None else format_credits(limit),
                *(
                    format_credits(totals.member_value(membership.pk, meter))
                    for meter in meters
                    if totals is not None
                ),
            ]
        )

    written = set()
    rows = members_with_usage_list(organization=organization, period=period)
    for row in rows.iterator(chunk_size=2000):
        write(row.membership, row.used, row.counted)
        written.add(row.membership_id)
    for membership in totals.members_without(written) if totals is not None else []:
        write(membership, Decimal(0), Decimal(0))
    return response


def export_column(meter_key: str) -> str:
    """A meter's column is its key; `meter:<key>` for a key that is one of the other columns."""
    return f"meter:{meter_key}" if meter_key in EXPORT_COLUMNS else meter_key


def _spreadsheet_safe(value: str) -> str:
    """Quote a cell a spreadsheet would run as a formula (OWASP's CSV injection advice)."""
    return f"'{value}" if value.startswith(SPREADSHEET_FORMULA_STARTS) else value


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
        context |= blocked_notice_context(
            organization=organization, decision=standing, membership=request.membership
        )
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
