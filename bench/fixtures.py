"""The benchmark's data. Small things through the services, as an operator or
the API would make them; the big fixtures (10,000 organizations, 100,000
users) with bulk inserts.

Every benchmark organization is configured alike, so that each write takes
the whole evaluation path without firing: an allowance that blocks, per-user
limits on, per-user alerts on, and an organization alert, all far above what
the benchmark spends.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import NOT_PROVIDED, Model
from django.utils import timezone

BIG = Decimal(10) ** 11  # limits and thresholds nobody reaches here
ALLOWANCE = Decimal(10) ** 12
PASSWORD_UNUSABLE = "!"


@dataclass
class Tenant:
    organization_id: int
    slug: str
    api_key: str
    users: list[str]  # external ids of its members, the admin first

    def organization(self) -> Any:
        from accounts.models import Organization

        return Organization.objects.get(pk=self.organization_id)


def _bulk(model: type[Model], rows: Iterable[Model]) -> int:
    """Insert model instances with COPY: every concrete field but the id,
    prepared as Django would for an INSERT (defaults, auto_now). Far faster
    than bulk_create for 100,000 rows. Returns the number of rows.
    """
    # Columns with a database default (`db_default`) are left to it.
    fields = [
        f for f in model._meta.concrete_fields if not f.primary_key and f.db_default is NOT_PROVIDED
    ]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    table = quote(model._meta.db_table)
    count = 0
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row([f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields])
            count += 1
    return count


def users_bulk(prefix: str, count: int) -> list[Any]:
    """`count` users, emails `<prefix><n>@bench.test`; returns them (id, email)."""
    from accounts.models import User

    if count <= 0:
        return []
    now = timezone.now()
    _bulk(
        User,
        (
            User(
                email=f"{prefix}{index}@bench.test",
                name=f"{prefix.title()} {index}",
                password=PASSWORD_UNUSABLE,
                date_joined=now,
            )
            for index in range(count)
        ),
    )
    return list(
        User.objects.filter(email__startswith=prefix, email__endswith="@bench.test")
        .only("id", "email")
        .order_by("pk")
    )


def memberships_bulk(organization_id: int, users: Sequence[Any], role: str = "member") -> list[str]:
    """Memberships of `users` (external id: the email); returns the external ids."""
    from accounts.models import Membership

    _bulk(
        Membership,
        (
            Membership(
                organization_id=organization_id, user_id=user.pk, role=role, external_id=user.email
            )
            for user in users
        ),
    )
    return [user.email for user in users]


def tenant_create(
    slug: str,
    *,
    members: int = 1,
    alerts: int = 1,
    configure: bool = True,
    alert_threshold: Decimal = BIG,
) -> Tenant:
    """An organization with an admin, `members - 1` more members, `alerts`
    organization alerts and an API key, through the services; the members
    beyond the admin in bulk.
    """
    from accounts.models import Role
    from accounts.services import api_key_create, membership_create, organization_create
    from alerts.services.changes import limit_policy_update
    from alerts.services.configuration import alert_create, user_alert_policy_update

    organization = organization_create(slug=slug, name=slug.title(), credit_allowance=ALLOWANCE)
    admin = membership_create(
        organization=organization, email=f"admin@{slug}.bench.test", role=Role.ADMIN
    )
    others = memberships_bulk(organization.pk, users_bulk(f"{slug}-u", members - 1))
    if configure:
        limit_policy_update(
            organization=organization, enabled=True, default_limit=BIG, admins=[admin]
        )
        user_alert_policy_update(
            organization=organization, enabled=True, threshold=BIG, admins=[admin]
        )
    for index in range(alerts):
        # Half absolute, half a percentage of the allowance: both paths are taken.
        if index % 2 == 0:
            alert_create(
                organization=organization,
                threshold_type="absolute",
                threshold=alert_threshold + index,
            )
        else:
            alert_create(
                organization=organization,
                threshold_type="percentage",
                threshold=Decimal(50 + index),
            )
    _, key = api_key_create(organization=organization)
    return Tenant(
        organization_id=organization.pk,
        slug=slug,
        api_key=key,
        users=[admin.external_id, *others],
    )


def grants_add(tenant: Tenant, *, count: int = 3) -> None:
    """Give the tenant `count` active grants (different priorities, one
    expiring) and an allowance of 1 credit, through the services: from its
    second credit on, every consume and ingest draws on the grants.
    """
    from datetime import UTC, datetime, timedelta

    from alerts.services.credits import credit_grant_create
    from billing.services.grants import GrantInput

    organization = tenant.organization()
    organization.credit_allowance = Decimal(1)
    organization.save(update_fields=["own_credit_allowance"])
    for index in range(count):
        credit_grant_create(
            organization=organization,
            grant=GrantInput(
                kind="purchased",
                credits=BIG,
                priority=10 + index,
                expires_at=datetime.now(UTC) + timedelta(days=365) if index == 0 else None,
            ),
        )


# The meters a mixed batch uses (SPEC §10): one of each costlier aggregation.
BENCH_METERS = ("bench_storage", "bench_seats", "bench_active_users")


def meters_create() -> tuple[str, ...]:
    """The platform meters of the mixed-meter probe: a sum, a max and a
    unique_count (over `user_id`), once.
    """
    from billing.models import Meter

    storage, seats, active = BENCH_METERS
    for key, aggregation, prop in (
        (storage, "sum", ""),
        (seats, "max", ""),
        (active, "unique_count", "user_id"),
    ):
        Meter.objects.get_or_create(
            key=key,
            defaults={"name": key, "unit": "units", "aggregation": aggregation, "property": prop},
        )
    return BENCH_METERS


def organizations_fill(total: int, *, events_per_organization: int = 10) -> int:
    """Bring the number of organizations up to `total` with busy-looking ones:
    each with an admin, an API key, an alert, this period's totals and some
    ledger rows. Returns how many were added.
    """
    from accounts.models import ApiKey, Membership, Organization
    from alerts.models import OrganizationAlert
    from billing.models import MemberUsage, OrganizationUsage, SourceUsage, UsageEvent
    from billing.periods import period_containing

    missing = total - Organization.objects.count()
    if missing <= 0:
        return 0
    now = timezone.now()
    period = period_containing(now, anchor_day=1)
    _bulk(
        Organization,
        (
            Organization(slug=f"filler-{i}", name=f"Filler {i}", own_credit_allowance=ALLOWANCE)
            for i in range(missing)
        ),
    )
    organizations = list(
        Organization.objects.filter(slug__startswith="filler-")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    users = users_bulk("filler-u", missing)
    _bulk(
        Membership,
        (
            Membership(organization_id=o, user_id=u.pk, role="admin", external_id=u.email)
            for o, u in zip(organizations, users, strict=True)
        ),
    )
    members = list(
        Membership.objects.filter(organization_id__in=organizations).values_list(
            "pk", "organization_id"
        )
    )
    _bulk(
        ApiKey,
        (
            ApiKey(organization_id=o, prefix="hr_filler", key_hash=secrets.token_hex(32))
            for o in organizations
        ),
    )
    _bulk(
        OrganizationAlert,
        (
            OrganizationAlert(organization_id=o, threshold_type="absolute", threshold=BIG)
            for o in organizations
        ),
    )
    used = Decimal(events_per_organization)
    _bulk(
        OrganizationUsage,
        (
            OrganizationUsage(organization_id=o, period_start=period.start, used=used)
            for o in organizations
        ),
    )
    _bulk(
        MemberUsage,
        (
            MemberUsage(
                organization_id=o,
                membership_id=m,
                period_start=period.start,
                used=used,
                counted=used,
            )
            for m, o in members
        ),
    )
    _bulk(
        SourceUsage,
        (
            SourceUsage(
                organization_id=o,
                membership_id=m,
                member_key=m,
                period_start=period.start,
                source="assistant",
                used=used,
            )
            for m, o in members
        ),
    )
    _bulk(
        UsageEvent,
        (
            UsageEvent(
                organization_id=o,
                membership_id=m,
                credits=Decimal(1),
                timestamp=now,
                period_start=period.start,
                idempotency_key=f"filler-{m}-{e}",
                fingerprint="0" * 64,
            )
            for m, o in members
            for e in range(events_per_organization)
        ),
    )
    return missing


def plans_create(crowded: Tenant, alone: Tenant) -> tuple[Any, Any]:
    """Two plans (SPEC §12): one of every filler organization and `crowded`,
    one of `alone` only; each tenant moves onto its plan through the service.
    """
    from accounts.models import Organization
    from accounts.plans import plan_create
    from alerts.services.changes import organization_update

    big = plan_create(key="bench-crowded", name="Crowded", credit_allowance=ALLOWANCE)
    small = plan_create(key="bench-alone", name="Alone", credit_allowance=ALLOWANCE)
    Organization.objects.filter(slug__startswith="filler-").update(plan=big)
    organization_update(organization=crowded.organization(), plan=big)
    organization_update(organization=alone.organization(), plan=small)
    return big, small


def platform_alerts_add(tenant: Tenant, *, count: int = 3) -> None:
    """`count` platform alerts (SPEC §12) that apply to the tenant and to no
    other probe's organization: scoped to a plan only it is on, never crossed
    (100 % of its allowance, BIG credits, the balance depleted), so that each
    write reads them and fires nothing, as most writes do.
    """
    from accounts.plans import plan_create
    from alerts.platform_models import PlatformAlert
    from alerts.services.changes import organization_update
    from alerts.services.platform_config import platform_alert_save

    plan = plan_create(key="bench-platform", name="Platform alerts")
    organization_update(organization=tenant.organization(), plan=plan)
    kinds = [("percentage", Decimal(100)), ("absolute", BIG), ("balance_depleted", None)]
    for index in range(count):
        threshold_type, threshold = kinds[index % len(kinds)]
        platform_alert_save(
            alert=PlatformAlert(
                name=f"Bench {index}",
                plan=plan,
                threshold_type=threshold_type,
                threshold=threshold,
                emails=["sales@bench.test"],
            )
        )


def usage_fill(tenant: Tenant, *, credits: Decimal = Decimal(1)) -> None:
    """This period's totals for every member of the tenant: a busy organization."""
    from accounts.models import Membership
    from billing.models import MemberUsage, OrganizationUsage, SourceUsage
    from billing.periods import period_containing

    period = period_containing(timezone.now(), anchor_day=1)
    members = list(Membership.objects.filter(organization_id=tenant.organization_id).only("id"))
    _bulk(
        MemberUsage,
        (
            MemberUsage(
                organization_id=tenant.organization_id,
                membership=m,
                period_start=period.start,
                used=credits,
                counted=credits,
            )
            for m in members
        ),
    )
    _bulk(
        SourceUsage,
        (
            SourceUsage(
                organization_id=tenant.organization_id,
                membership=m,
                member_key=m.pk,
                period_start=period.start,
                source="assistant",
                used=credits,
            )
            for m in members
        ),
    )
    OrganizationUsage.objects.update_or_create(
        organization_id=tenant.organization_id,
        period_start=period.start,
        defaults={"used": credits * len(members)},
    )


def custom_limits_bulk(tenant: Tenant, count: int, *, limit: Decimal = BIG) -> None:
    from accounts.models import Membership
    from billing.models import CustomLimit

    members = Membership.objects.filter(organization_id=tenant.organization_id).order_by("pk")
    _bulk(
        CustomLimit,
        (
            CustomLimit(organization_id=tenant.organization_id, membership=m, limit=limit)
            for m in members[1 : count + 1]
        ),
    )


def page_organization(slug: str, *, users: Sequence[Any], admins: int = 20) -> Tenant:
    """The Limits & Alerts page's organization: every section full. Members
    are `users` (existing rows), `admins` of them admins; 10 alerts, 500
    custom limits, 300 members over budget, 60 firings this period.
    """
    from accounts.models import Membership, Role
    from alerts.models import Firing, FiringKind, OrganizationAlert, Recipients
    from alerts.services.changes import limit_policy_update
    from alerts.services.configuration import alert_create, user_alert_policy_update
    from billing.models import CustomLimit, MemberUsage
    from billing.periods import period_containing

    tenant = tenant_create(slug, members=1, alerts=0, configure=False)
    organization = tenant.organization()
    memberships_bulk(organization.pk, users[:admins], role=Role.ADMIN)
    memberships_bulk(organization.pk, users[admins:])
    all_admins = list(Membership.objects.filter(organization=organization, role=Role.ADMIN))
    limit_policy_update(
        organization=organization, enabled=True, default_limit=Decimal(100), admins=all_admins[:3]
    )
    user_alert_policy_update(
        organization=organization,
        enabled=True,
        threshold=Decimal(80),
        notify_user=True,
        admins=all_admins[:3],
    )
    for index in range(10):
        alert_create(
            organization=organization,
            threshold_type="percentage" if index % 2 else "absolute",
            threshold=Decimal(10 * (index + 1)) if index % 2 else BIG + index,
            notify=Recipients.SPECIFIC_ADMINS if index % 3 == 0 else Recipients.ALL_ADMINS,
            admins=all_admins[:2] if index % 3 == 0 else [],
        )
    members = list(
        Membership.objects.filter(organization=organization, role=Role.MEMBER).order_by("pk")
    )
    _bulk(
        CustomLimit,
        (
            CustomLimit(organization=organization, membership=m, limit=Decimal(500))
            for m in members[:500]
        ),
    )
    now = timezone.now()
    period = period_containing(now, anchor_day=organization.anchor_day)
    # 300 over budget (150 over their custom limit, 150 over the default), the rest under.
    over = {m.pk for m in members[350:650]}
    _bulk(
        MemberUsage,
        (
            MemberUsage(
                organization=organization,
                membership=m,
                period_start=period.start,
                used=Decimal(600 if m.pk in over else 10),
                counted=Decimal(600 if m.pk in over else 10),
                limit_reached_at=now - timedelta(hours=1) if m.pk in over else None,
            )
            for m in members
        ),
    )
    alert = OrganizationAlert.objects.filter(organization=organization).first()
    _bulk(
        Firing,
        (
            Firing(
                organization=organization,
                kind=FiringKind.USER_LIMIT if i % 2 else FiringKind.ORGANIZATION_ALERT,
                alert=None if i % 2 else alert,
                membership=members[350 + i] if i % 2 else None,
                user_external_id=members[350 + i].external_id if i % 2 else "",
                threshold=Decimal(100),
                threshold_credits=Decimal(100),
                value=Decimal(600),
                allowance=ALLOWANCE,
                period_start=period.start,
                period_end=period.end,
                triggered_at=now - timedelta(minutes=i),
                dedupe_key=f"bench:{i}",
            )
            for i in range(60)
        ),
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return tenant
