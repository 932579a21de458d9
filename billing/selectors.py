from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import (
    Case,
    DateTimeField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import (
    ANCHOR_DAY_MAX,
    ANCHOR_DAY_MIN,
    Membership,
    Organization,
    Role,
    ValueSource,
)
from accounts.selectors import member_name_expression
from billing.models import (
    CustomLimit,
    DailyUsage,
    MemberUsage,
    OrganizationUsage,
    SourceUsage,
    UserLimitPolicy,
)
from billing.periods import Period, organization_period, period_containing
from config import rawsql
from config.credits import credits_field

ZERO = Decimal(0)


def current_period(organization: Organization, *, now: datetime | None = None) -> Period:
    return organization_period(organization, now or timezone.now())


@dataclass(frozen=True)
class LimitRules:
    """How per-user limits apply in an organization, for a set of members."""

    enabled: bool
    default_limit: Decimal | None
    excluded_sources: frozenset[str]
    custom_limits: dict[int, Decimal | None]  # membership id -> limit (None: unlimited)

    def limit_for(self, membership_id: int) -> Decimal | None:
        """The member's limit; None when they have none."""
        if not self.enabled:
            return None
        if membership_id in self.custom_limits:
            return self.custom_limits[membership_id]
        return self.default_limit

    def counts(self, source: str) -> bool:
        """Whether usage from `source` counts toward per-user limits."""
        return source not in self.excluded_sources


def limit_policy_get(*, organization: Organization) -> UserLimitPolicy:
    """The organization's policy; an unsaved, disabled one when none exists yet."""
    policy = UserLimitPolicy.objects.filter(organization=organization).first()
    return policy or UserLimitPolicy(organization=organization)


def limit_rules_get(*, organization: Organization, membership_ids: Iterable[int]) -> LimitRules:
    """The limit rules for these members: one query, whatever their number.

    Written as SQL, as every consume and ingest runs it (see config/rawsql.py):
    the policy, joined to these members' custom limits when it is enabled.
    """
    return _limit_rules(organization, rawsql.any_of("c.membership_id", list(membership_ids)))


def limit_rules_get_for_all_members(*, organization: Organization) -> LimitRules:
    """The limit rules for every member of the organization, for reports that
    cover them all: no list of member ids to send. Custom limits are set one
    member at a time, so there are few of them to load.
    """
    return _limit_rules(organization, ("TRUE", []))


def _limit_rules(organization: Organization, members: tuple[str, list[Any]]) -> LimitRules:
    """The policy, joined to the custom limits of the members that the SQL
    condition `members` (on `c.membership_id`, with its parameters) selects.
    """
    member_condition, member_params = members
    plan_default = organization.plan.default_limit if organization.plan else None
    rows = rawsql.fetch_all(
        f"""
        SELECT p.enabled, p.default_limit, p.excluded_sources, c.membership_id, c."limit"
        FROM {UserLimitPolicy._meta.db_table} p
        LEFT JOIN {CustomLimit._meta.db_table} c
            ON p.enabled AND c.organization_id = p.organization_id AND {member_condition}
        WHERE p.organization_id = %s
        """,
        [*member_params, organization.pk],
    )
    if not rows:
        # No policy of its own: its plan's default limit, if the plan has one (SPEC §12).
        return LimitRules(
            enabled=plan_default is not None,
            default_limit=plan_default,
            excluded_sources=frozenset(),
            custom_limits={},
        )
    enabled, default_limit, excluded_sources = rows[0][:3]
    own_default = rawsql.convert(UserLimitPolicy, "default_limit", default_limit)
    return LimitRules(
        enabled=bool(enabled),
        default_limit=plan_default if own_default is None else own_default,
        excluded_sources=frozenset(
            rawsql.convert(UserLimitPolicy, "excluded_sources", excluded_sources)
        ),
        custom_limits={
            membership_id: rawsql.convert(CustomLimit, "limit", limit)
            for *_, membership_id, limit in rows
            if membership_id is not None
        },
    )


@dataclass(frozen=True)
class DefaultLimit:
    limit: Decimal | None
    source: str | None  # accounts.models.ValueSource, or None: no default


def limit_default_in_force(*, organization: Organization) -> DefaultLimit:
    """The default per-user limit in force: the limits policy's own, else the
    plan's (SPEC §12). Per-user limits apply when the policy is enabled, or
    when the organization has no policy and its plan sets a default.
    """
    own = (
        UserLimitPolicy.objects.filter(organization=organization)
        .values_list("default_limit", flat=True)
        .first()
    )
    if own is not None:
        return DefaultLimit(own, ValueSource.ORGANIZATION)
    plan_default = organization.plan.default_limit if organization.plan else None
    if plan_default is not None:
        return DefaultLimit(plan_default, ValueSource.PLAN)
    return DefaultLimit(None, None)


def organization_used(*, organization: Organization, period: Period) -> Decimal:
    used = (
        OrganizationUsage.objects.filter(organization=organization, period_start=period.start)
        .values_list("used", flat=True)
        .first()
    )
    return used if used is not None else ZERO


def member_usage_get(*, membership: Membership, period: Period) -> tuple[Decimal, Decimal]:
    """(used, counted) of a member in a period."""
    row = (
        MemberUsage.objects.filter(membership=membership, period_start=period.start)
        .values_list("used", "counted")
        .first()
    )
    return row if row is not None else (ZERO, ZERO)


def usage_by_source(*, organization: Organization, period: Period) -> dict[str, Decimal]:
    rows = (
        SourceUsage.objects.filter(organization=organization, period_start=period.start)
        .values("source")
        .annotate(total=Sum("used"))
        .order_by("source")
    )
    return {row["source"]: row["total"] for row in rows}


def members_over_budget(
    *, organization: Organization, period: Period, policy: UserLimitPolicy | None = None
) -> QuerySet[MemberUsage]:
    """The members whose counted usage this period is at or over their limit,
    with `limit` annotated; empty while per-user limits are off. One join to
    the custom limits (no correlated subqueries: they made PostgreSQL's plan
    look costly enough to JIT-compile it; docs/benchmarks.md has the figures).
    """
    policy = policy or limit_policy_get(organization=organization)
    if not policy.enabled:
        return MemberUsage.objects.none()
    # over_budget (billing/rules.py) as a query: counted >= the member's limit.
    custom_limit = F("membership__custom_limit__limit")
    has_custom = Q(membership__custom_limit__isnull=False)
    over_custom = has_custom & Q(
        membership__custom_limit__limit__isnull=False, counted__gte=custom_limit
    )
    over_default = (
        ~has_custom & Q(counted__gte=policy.default_limit)
        if policy.default_limit is not None
        else Q(pk__in=[])
    )
    return (
        MemberUsage.objects.filter(organization=organization, period_start=period.start)
        .filter(over_custom | over_default)
        .annotate(
            limit=Case(
                When(has_custom, then=custom_limit),
                default=Value(policy.default_limit, output_field=credits_field(null=True)),
            )
        )
        .select_related("membership__user")
    )


def custom_limits_list(*, organization: Organization) -> QuerySet[CustomLimit]:
    return CustomLimit.objects.filter(organization=organization).select_related("membership__user")


def member_usages_list(*, organization: Organization, period: Period) -> QuerySet[MemberUsage]:
    return MemberUsage.objects.filter(
        organization=organization, period_start=period.start
    ).select_related("membership")


def admins_to_ask(*, organization: Organization) -> list[Membership]:
    """The admins a blocked member should ask: those the limits policy names,
    or every admin of the organization when it names none. One query.

    A named admin who has since become a member is not asked; when that
    leaves nobody, every admin is.
    """
    named = UserLimitPolicy.admins.through.objects.filter(
        userlimitpolicy__organization=organization, membership__role=Role.ADMIN
    )
    return list(
        Membership.objects.filter(organization=organization, role=Role.ADMIN)
        .filter(Exists(named.filter(membership_id=OuterRef("pk"))) | ~Exists(named))
        .select_related("user")
        .order_by(member_name_expression(), "user__email")
    )


@dataclass(frozen=True)
class DayUsage:
    day: date
    used: Decimal


def period_days(period: Period) -> list[date]:
    """Every UTC day of the period: periods start and end at 00:00 UTC."""
    first, end = period.start.date(), period.end.date()
    return [first + timedelta(days=offset) for offset in range((end - first).days)]


def daily_usage_list(
    *, organization: Organization, period: Period, until: date | None = None
) -> list[DayUsage]:
    """The organization's usage on each day of the period, from its first day
    to `until` (its last day when not given), 0 on a day without usage.
    One query on the daily totals: the raw events are never read.
    """
    days = [day for day in period_days(period) if until is None or day <= until]
    if not days:
        return []
    used_on = dict(
        DailyUsage.objects.filter(
            organization=organization, day__gte=days[0], day__lte=days[-1]
        ).values_list("day", "used")
    )
    return [DayUsage(day=day, used=used_on.get(day, ZERO)) for day in days]


def members_with_usage_list(*, organization: Organization, period: Period) -> QuerySet[MemberUsage]:
    """The members who used credits in the period, with their users, the
    heaviest first (ties by `external_id`, so the order is stable).
    """
    return (
        member_usages_list(organization=organization, period=period)
        .filter(used__gt=0)
        .select_related("membership__user")
        .order_by("-used", "membership__external_id")
    )


def current_period_start(organization: str = "", *, now: datetime | None = None) -> Case:
    """The start of the current billing period of each row's organization, for
    use in a query: one WHEN per anchor day (1-28), each computed by
    billing.periods, so that periods follow one rule everywhere; before them
    one WHEN for each organization whose anchor day changed lately (its
    period under way or the next is not a plain month: a handful of rows).
    `organization` is the path to the organization ("" for the organization
    itself, "organization__" from a related row).
    """
    moment = now or timezone.now()
    pk = f"{organization}id"
    changing = Organization.objects.filter(regular_periods_from__gt=moment)
    return Case(
        *(
            When(**{pk: changed.pk}, then=Value(organization_period(changed, moment).start))
            for changed in changing.only("pk", "anchor_day", "anchor_history")
        ),
        *(
            When(
                **{f"{organization}anchor_day": day},
                then=Value(period_containing(moment, anchor_day=day).start),
            )
            for day in range(ANCHOR_DAY_MIN, ANCHOR_DAY_MAX + 1)
        ),
        output_field=DateTimeField(),
    )


def organizations_with_usage_this_period(
    organizations: QuerySet[Organization], *, now: datetime | None = None
) -> QuerySet[Organization]:
    """Annotate `usage_this_period`: the credits each organization used in its
    own current period, in the same query as the organizations themselves.
    """
    used = OrganizationUsage.objects.filter(
        organization=OuterRef("pk"), period_start=OuterRef("current_period_start")
    ).values("used")[:1]
    return organizations.annotate(
        current_period_start=current_period_start(now=now),
        usage_this_period=Coalesce(Subquery(used), Value(ZERO), output_field=credits_field()),
    )
