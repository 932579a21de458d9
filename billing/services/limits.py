"""Member limits: the per-user limits policy and each member's own limit.

A change here can put members over budget at once: `_mark_members_over_budget`
notes when, in the change's transaction. The callers are the wrappers of
alerts.services.changes: they run these inside their own transaction, retry
it on a deadlock (config/dbretry.py) and re-evaluate the alerts in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Membership, Organization
from accounts.selectors import validate_admins
from billing import ledger
from billing.models import (
    EXCLUDABLE_SOURCES,
    CustomLimit,
    MemberUsage,
    SourceUsage,
    UserLimitPolicy,
)
from billing.periods import organization_period
from billing.rules import ZERO, over_budget
from billing.selectors import limit_rules_get
from config.credits import credits_field, format_credits
from config.errors import InvalidInput


def limit_policy_update(
    *,
    organization: Organization,
    enabled: bool | None = None,
    default_limit: Decimal | None = None,
    clear_default_limit: bool = False,
    admins: Sequence[Membership] | None = None,
    excluded_sources: Sequence[str] | None = None,
) -> UserLimitPolicy:
    """Change the per-user limits policy; what is not given stays as it is."""
    if excluded_sources is not None:
        unknown = set(excluded_sources) - set(EXCLUDABLE_SOURCES)
        if unknown:
            raise InvalidInput(
                f"Only {', '.join(EXCLUDABLE_SOURCES)} can be excluded, "
                f"not {', '.join(sorted(unknown))}.",
                code="invalid_excluded_sources",
                field="excluded_sources",
            )
    if admins is not None:
        validate_admins(organization=organization, admins=admins)
    with transaction.atomic():
        policy, created = UserLimitPolicy.objects.select_for_update().get_or_create(
            organization=organization
        )
        old_admins = [] if created else list(policy.admins.all())
        before = _limit_policy_snapshot(policy, old_admins)
        exclusions_changed = excluded_sources is not None and set(excluded_sources) != set(
            policy.excluded_sources
        )
        if enabled is not None:
            policy.enabled = enabled
        if clear_default_limit or default_limit is not None:
            policy.default_limit = None if clear_default_limit else default_limit
        if excluded_sources is not None:
            policy.excluded_sources = sorted(set(excluded_sources))
        policy.save()
        if admins is not None:
            policy.admins.set(admins)
        audit_record(
            organization=organization,
            action="limit_policy.updated",
            target_type="user_limit_policy",
            target_id=policy.pk,
            before=before,
            after=_limit_policy_snapshot(policy, old_admins if admins is None else admins),
        )
        if exclusions_changed:
            _recount_members(organization=organization, policy=policy)
        _mark_members_over_budget(organization=organization)
    return policy


def _recount_members(*, organization: Organization, policy: UserLimitPolicy) -> None:
    """Counted usage is used minus the excluded sources: recompute it for this
    period from the per-source totals, after locking the members' rows so that
    no consume slips in between.
    """
    period = organization_period(organization, timezone.now())
    members = MemberUsage.objects.filter(organization=organization, period_start=period.start)
    list(members.select_for_update().order_by("membership_id").values_list("id", flat=True))
    excluded_used = (
        SourceUsage.objects.filter(
            membership_id=OuterRef("membership_id"),
            period_start=OuterRef("period_start"),
            source__in=policy.excluded_sources,
        )
        .values("membership_id")
        .annotate(total=Sum("used"))
        .values("total")
    )
    members.update(
        counted=F("used")
        - Coalesce(Subquery(excluded_used), Value(ZERO), output_field=credits_field())
    )


def _mark_members_over_budget(*, organization: Organization) -> None:
    """After a limit or exclusion change, note when members are now over
    budget (`limit_reached_at`, which the user-limit alert and the Users
    Exceeding list read).
    """
    period = organization_period(organization, timezone.now())
    candidates = list(
        MemberUsage.objects.filter(
            organization=organization,
            period_start=period.start,
            limit_reached_at__isnull=True,
            counted__gt=0,
        ).values_list("id", "membership_id", "counted")
    )
    if not candidates:
        return
    rules = limit_rules_get(organization=organization, membership_ids=[m for _, m, _ in candidates])
    reached = [
        row_id
        for row_id, membership_id, counted in candidates
        if over_budget(counted, rules.limit_for(membership_id))
    ]
    if reached:
        ledger.mark_limits_reached(member_usage_ids=reached, now=timezone.now())


def custom_limit_set(
    *, organization: Organization, membership: Membership, limit: Decimal | None
) -> CustomLimit:
    """Set a member's own limit (None: unlimited), overriding the default."""
    with transaction.atomic():
        previous = CustomLimit.objects.select_for_update().filter(membership=membership).first()
        before = _custom_limit_snapshot(membership, previous.limit) if previous else None
        custom, _ = CustomLimit.objects.update_or_create(
            membership=membership, defaults={"organization": organization, "limit": limit}
        )
        audit_record(
            organization=organization,
            action="custom_limit.set",
            target_type="custom_limit",
            target_id=membership.external_id,
            before=before,
            after=_custom_limit_snapshot(membership, limit),
        )
        _mark_members_over_budget(organization=organization)
    return custom


def custom_limit_delete(*, custom_limit: CustomLimit) -> None:
    with transaction.atomic():
        organization = custom_limit.organization
        audit_record(
            organization=organization,
            action="custom_limit.deleted",
            target_type="custom_limit",
            target_id=custom_limit.membership.external_id,
            before=_custom_limit_snapshot(custom_limit.membership, custom_limit.limit),
        )
        custom_limit.delete()
        _mark_members_over_budget(organization=organization)


def _limit_policy_snapshot(policy: UserLimitPolicy, admins: Sequence[Membership]) -> dict[str, Any]:
    return {
        "enabled": policy.enabled,
        "default_limit": (
            format_credits(Decimal(policy.default_limit))
            if policy.default_limit is not None
            else None
        ),
        "excluded_sources": sorted(policy.excluded_sources),
        "admins": sorted(admin.external_id for admin in admins),
    }


def _custom_limit_snapshot(membership: Membership, limit: Decimal | None) -> dict[str, Any]:
    """`limit` None: unlimited."""
    return {
        "user": membership.external_id,
        "limit": format_credits(Decimal(limit)) if limit is not None else None,
    }
