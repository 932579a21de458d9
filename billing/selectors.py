from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.utils import timezone

from accounts.models import Membership, Organization, Role
from billing.credits import credits_field
from billing.models import CustomLimit, MemberUsage, OrganizationUsage, SourceUsage, UserLimitPolicy
from billing.periods import Period, period_containing

ZERO = Decimal(0)


def current_period(organization: Organization, *, now: datetime | None = None) -> Period:
    return period_containing(now or timezone.now(), anchor_day=organization.anchor_day)


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
    """The limit rules for these members: two queries, whatever their number."""
    policy = limit_policy_get(organization=organization)
    ids = list(membership_ids)
    custom = (
        dict(
            CustomLimit.objects.filter(
                organization=organization, membership_id__in=ids
            ).values_list("membership_id", "limit")
        )
        if ids and policy.enabled
        else {}
    )
    return LimitRules(
        enabled=policy.enabled,
        default_limit=policy.default_limit,
        excluded_sources=frozenset(policy.excluded_sources),
        custom_limits=custom,
    )


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


def members_over_budget(*, organization: Organization, period: Period) -> QuerySet[MemberUsage]:
    """The members whose counted usage this period is at or over their limit,
    with `limit` annotated; empty while per-user limits are off.
    """
    policy = limit_policy_get(organization=organization)
    if not policy.enabled:
        return MemberUsage.objects.none()
    custom = CustomLimit.objects.filter(membership_id=OuterRef("membership_id"))
    rows = MemberUsage.objects.filter(
        organization=organization, period_start=period.start
    ).annotate(
        has_custom_limit=Exists(custom),
        custom_limit=Subquery(custom.values("limit")[:1]),
    )
    over_custom = Q(
        has_custom_limit=True, custom_limit__isnull=False, counted__gte=F("custom_limit")
    )
    over_default = (
        Q(has_custom_limit=False, counted__gte=policy.default_limit)
        if policy.default_limit is not None
        else Q(pk__in=[])
    )
    return (
        rows.filter(over_custom | over_default)
        .annotate(
            limit=Case(
                When(has_custom_limit=True, then=F("custom_limit")),
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
        .order_by("user__name", "user__email")
    )
