"""The demo organization `acme`: people to log in as, an API key, per-user
limits, some usage this billing period, two meters and a little usage of
them (_demo_meters.py), credit grants and a balance alert, two plans with
acme on Team and an alert it inherits (_demo_plans.py); and a platform
staff login for the Django admin, with a platform alert to sales.

Each step creates only what is missing, so the command can be run on every
start: a rerun changes nothing. New demo data is a new step in `handle`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import transaction
from django.utils import timezone

from accounts.management.commands._base import OperatorCommand
from accounts.management.commands._demo_meters import (
    DEMO_METERS,
    seed_meter_usage,
    seed_meters,
)
from accounts.management.commands._demo_plans import (
    DEMO_PLAN,
    DEMO_PLAN_ALERT_PERCENT,
    DEMO_PLANS,
    seed_plans,
)
from accounts.models import ApiKey, Organization, Role, User
from accounts.services import api_key_create, membership_create, organization_create
from alerts.models import BalanceAlert, BalanceAlertType, PlatformAlert, PlatformThresholdType
from alerts.services.changes import custom_limit_set, limit_policy_update
from alerts.services.credit_settings import balance_alert_create
from alerts.services.credits import credit_grant_create
from alerts.services.ingest import UsageInput, usage_ingest
from alerts.services.platform_config import platform_alert_save
from billing.balance import credit_balance_get
from billing.models import CreditGrant, GrantKind, MemberUsage, Source, UsageEvent, UserLimitPolicy
from billing.selectors import current_period, limit_rules_get_for_all_members
from billing.services.grants import GrantInput

DEMO_SLUG = "acme"
DEMO_NAME = "Acme Inc"
DEMO_ALLOWANCE = Decimal(10000)
DEMO_ANCHOR_DAY = 1
DEMO_PASSWORD = "headroom-demo"
DEMO_ADMIN_EMAIL = "admin@acme.test"
DEMO_API_KEY_NAME = "Demo key"
# Platform staff (a superuser in no organization): logging in, they land in
# the Django admin.
DEMO_STAFF_EMAIL = "staff@headroom.local"
DEMO_STAFF_NAME = "Sky Staff"
# A member at this share of their limit or more is "near" it.
NEAR_LIMIT_SHARE = Decimal("0.8")


class DemoPerson(NamedTuple):
    email: str
    name: str
    role: Role


DEMO_PEOPLE = (
    DemoPerson(DEMO_ADMIN_EMAIL, "Alex Admin", Role.ADMIN),
    DemoPerson("morgan@acme.test", "Morgan Lee", Role.ADMIN),
    DemoPerson("priya@acme.test", "Priya Shah", Role.MEMBER),
    DemoPerson("sam@acme.test", "Sam Carter", Role.MEMBER),
    DemoPerson("jordan@acme.test", "Jordan Diaz", Role.MEMBER),
    DemoPerson("taylor@acme.test", "Taylor Kim", Role.MEMBER),
    DemoPerson("chen@acme.test", "Chen Wei", Role.MEMBER),
    DemoPerson("fatima@acme.test", "Fatima Noor", Role.MEMBER),
    DemoPerson("diego@acme.test", "Diego Alvarez", Role.MEMBER),
    DemoPerson("noah@acme.test", "Noah Fischer", Role.MEMBER),
)

DEMO_DEFAULT_LIMIT = Decimal(500)
DEMO_EXCLUDED_SOURCES = (Source.WORKFLOW,)
# Custom limits: a number, or None for Unlimited.
DEMO_CUSTOM_LIMITS: dict[str, Decimal | None] = {
    "sam@acme.test": Decimal(1000),
    "jordan@acme.test": None,
}


class DemoUsage(NamedTuple):
    email: str
    source: Source
    credits: Decimal


# Usage this period. With the default limit of 500 and workflows excluded,
# Priya is at 500 of 500 (over budget), Taylor at 420 of 500; Sam counts 640
# of his custom 1000 and Jordan, unlimited, 1200.
DEMO_USAGE = (
    DemoUsage(DEMO_ADMIN_EMAIL, Source.ASSISTANT, Decimal(120)),
    DemoUsage("morgan@acme.test", Source.AGENT, Decimal(80)),
    DemoUsage("priya@acme.test", Source.ASSISTANT, Decimal(300)),
    DemoUsage("priya@acme.test", Source.AGENT, Decimal(200)),
    DemoUsage("priya@acme.test", Source.WORKFLOW, Decimal(150)),
    DemoUsage("sam@acme.test", Source.ASSISTANT, Decimal(400)),
    DemoUsage("sam@acme.test", Source.AGENT, Decimal(240)),
    DemoUsage("jordan@acme.test", Source.ASSISTANT, Decimal(700)),
    DemoUsage("jordan@acme.test", Source.AGENT_EXTERNAL, Decimal(500)),
    DemoUsage("taylor@acme.test", Source.ASSISTANT, Decimal(300)),
    DemoUsage("taylor@acme.test", Source.AGENT, Decimal(120)),
    DemoUsage("taylor@acme.test", Source.WORKFLOW, Decimal(80)),
    DemoUsage("chen@acme.test", Source.ASSISTANT, Decimal(90)),
    DemoUsage("fatima@acme.test", Source.API, Decimal(35)),
    DemoUsage("noah@acme.test", Source.AGENT, Decimal(260)),
)
# Each amount is spent in a few events spread over the period so far, in
# these shares, so that usage grows day by day.
DEMO_USAGE_SHARES = (Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), Decimal("0.4"))


class DemoGrant(NamedTuple):
    idempotency_key: str
    kind: GrantKind
    credits: Decimal
    expires_in_days: int | None
    note: str


# Credits beyond the allowance: bought ones that never expire, and a
# promotion that expires soon, so the expiring-credits notice has something
# to say. Found again by their idempotency key on a rerun.
DEMO_GRANTS = (
    DemoGrant("demo-purchased", GrantKind.PURCHASED, Decimal(5000), None, "Demo: credit pack"),
    DemoGrant("demo-promotional", GrantKind.PROMOTIONAL, Decimal(1000), 14, "Demo: welcome offer"),
)
# The balance alert: admins are emailed when the balance drops below this.
DEMO_BALANCE_ALERT_THRESHOLD = Decimal(2000)
# Platform staff's own alert (SPEC §12): sales hear of any organization at 80 %.
DEMO_PLATFORM_ALERT_NAME = "Sales: a customer at 80% of its allowance"
DEMO_SALES_EMAIL = "sales@headroom.example"


class Command(OperatorCommand):
    help = "Create the demo organization 'acme' with admins, members and an API key (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        with transaction.atomic():
            organization, organization_created = seed_organization()
            people_added = seed_people(organization)
            raw_api_key = seed_api_key(organization)
            limits_configured = seed_limits(organization)
            usage_added = seed_usage(organization, now=now)
            meters_added = seed_meters()
            meter_events_added = seed_meter_usage(organization, now=now)
            grants_added = seed_grants(organization, now=now)
            balance_alert_added = seed_balance_alert(organization)
            plans_added = seed_plans(organization)
            staff_created = seed_staff()
            platform_alert_added = seed_platform_alert()
            logins = demo_logins(organization, now=now)

        self.stdout.write(
            f"Demo organization {organization.slug} ({organization.name}): "
            f"{'created' if organization_created else 'already there'}; "
            f"{people_added} of {len(DEMO_PEOPLE)} people added."
        )
        usage = f"usage this period: {usage_added} events added"
        self.stdout.write(
            f"Per-user limits: {'configured' if limits_configured else 'already configured'} "
            f"(default {DEMO_DEFAULT_LIMIT} credits, workflows excluded); {usage}."
        )
        self.stdout.write(
            "Meters: "
            + " and ".join(f"{m.key} ({m.aggregation}, {m.unit})" for m in DEMO_METERS)
            + f", {meters_added} of {len(DEMO_METERS)} added; "
            f"their events this period: {meter_events_added} added."
        )
        self.stdout.write(
            credits_phrase(organization, grants_added=grants_added)
            + f"; a balance alert below {credits(DEMO_BALANCE_ALERT_THRESHOLD)} credits "
            + ("added." if balance_alert_added else "already there.")
        )
        self.stdout.write(
            "Plans: "
            + " and ".join(f"{plan.name} ({plan.key})" for plan in DEMO_PLANS)
            + f"; {organization.slug} on {DEMO_PLAN}, which gives it an alert at "
            f"{DEMO_PLAN_ALERT_PERCENT}% of the allowance"
            + (f" ({plans_added} added)." if plans_added else " (already there).")
        )
        self.stdout.write(
            f"Admin login: {DEMO_ADMIN_EMAIL} / {DEMO_PASSWORD} "
            "(every demo login below has this password)"
        )
        width = max(len(login.email) for login in logins)
        for login in logins:
            self.stdout.write(f"  {login.role:<6}  {login.email:<{width}}  {login.usage}")
        self.stdout.write(
            f"Staff login (the Django admin, /admin/): {DEMO_STAFF_EMAIL} / {DEMO_PASSWORD}"
            + (" (created)" if staff_created else "")
        )
        self.stdout.write(
            f"Platform alert: {DEMO_SALES_EMAIL} is emailed when any organization reaches 80% "
            "of its allowance; " + ("added." if platform_alert_added else "already there.")
        )
        self.write_api_key(organization, raw_api_key)

    def write_api_key(self, organization: Organization, raw_api_key: str | None) -> None:
        if raw_api_key is not None:
            self.stdout.write(f"Demo API key (shown only this once): {raw_api_key}")
            return
        self.stdout.write(
            "Demo API key: created by an earlier run and not shown again; make another with "
            f"`.venv/bin/python manage.py create_api_key {organization.slug}`."
        )


def seed_organization() -> tuple[Organization, bool]:
    organization = Organization.objects.filter(slug=DEMO_SLUG).first()
    if organization is not None:
        return organization, False
    organization = organization_create(
        slug=DEMO_SLUG,
        name=DEMO_NAME,
        credit_allowance=DEMO_ALLOWANCE,
        anchor_day=DEMO_ANCHOR_DAY,
    )
    return organization, True


def seed_people(organization: Organization) -> int:
    """Add the demo people who are not members yet; return how many were added."""
    members = set(organization.memberships.values_list("user__email", flat=True))
    missing = [person for person in DEMO_PEOPLE if person.email not in members]
    for person in missing:
        membership_create(
            organization=organization,
            email=person.email,
            role=person.role,
            name=person.name,
            password=DEMO_PASSWORD,
        )
    return len(missing)


def seed_api_key(organization: Organization) -> str | None:
    """The raw value of a new demo key, or None when an active one exists."""
    has_demo_key = ApiKey.objects.filter(
        organization=organization, name=DEMO_API_KEY_NAME, revoked_at__isnull=True
    ).exists()
    if has_demo_key:
        return None
    _, raw_key = api_key_create(organization=organization, name=DEMO_API_KEY_NAME)
    return raw_key


def seed_limits(organization: Organization) -> bool:
    """Turn per-user limits on, once: default 500, workflows excluded, the
    first admin notified, one custom limit and one Unlimited. An organization
    that already has a limits policy keeps it as its admins left it.
    """
    if UserLimitPolicy.objects.filter(organization=organization).exists():
        return False
    members = {
        membership.user.email: membership
        for membership in organization.memberships.select_related("user")
    }
    first_admin = next(
        (
            members[person.email]
            for person in DEMO_PEOPLE
            if person.email in members and members[person.email].is_admin
        ),
        None,
    )
    limit_policy_update(
        organization=organization,
        enabled=True,
        default_limit=DEMO_DEFAULT_LIMIT,
        admins=[first_admin] if first_admin is not None else [],
        excluded_sources=list(DEMO_EXCLUDED_SOURCES),
    )
    for email, limit in DEMO_CUSTOM_LIMITS.items():
        if email in members:
            custom_limit_set(organization=organization, membership=members[email], limit=limit)
    return True


def seed_usage(organization: Organization, *, now: datetime) -> int:
    """Record the demo usage of the current period that is not there yet;
    return how many events were added.

    Keys name the period, the person, the source and the share, so a rerun
    in the same period finds them all and adds nothing.
    """
    period = current_period(organization, now=now)
    external_ids = dict(organization.memberships.values_list("user__email", "external_id"))
    planned = [
        (f"demo-{period.start:%Y-%m-%d}-{usage.email}-{usage.source.value}-{share}", usage, share)
        for share in range(len(DEMO_USAGE_SHARES))
        for usage in DEMO_USAGE
        if usage.email in external_ids
    ]
    recorded = set(
        UsageEvent.objects.filter(
            organization=organization, idempotency_key__in=[key for key, _, _ in planned]
        ).values_list("idempotency_key", flat=True)
    )
    elapsed = now - period.start
    events = [
        UsageInput(
            idempotency_key=key,
            credits=usage.credits * DEMO_USAGE_SHARES[share],
            user=external_ids[usage.email],
            source=usage.source.value,
            # Spread over the period so far, in order: each share after the last.
            timestamp=period.start + elapsed * (index + 1) / (len(planned) + 1),
        )
        for index, (key, usage, share) in enumerate(planned)
        if key not in recorded
    ]
    if not events:
        return 0
    return usage_ingest(organization=organization, events=events).accepted


def seed_grants(organization: Organization, *, now: datetime) -> int:
    """Grant the demo credits not granted yet, through the service (ledger,
    balance alerts, webhook); return how many were added. A rerun finds them
    by key and adds nothing, even once the promotion has expired.
    """
    granted = set(
        CreditGrant.objects.filter(
            organization=organization,
            idempotency_key__in=[grant.idempotency_key for grant in DEMO_GRANTS],
        ).values_list("idempotency_key", flat=True)
    )
    missing = [grant for grant in DEMO_GRANTS if grant.idempotency_key not in granted]
    for grant in missing:
        credit_grant_create(
            organization=organization,
            grant=GrantInput(
                kind=grant.kind,
                credits=grant.credits,
                expires_at=(
                    None
                    if grant.expires_in_days is None
                    else now + timedelta(days=grant.expires_in_days)
                ),
                note=grant.note,
                idempotency_key=grant.idempotency_key,
            ),
        )
    return len(missing)


def seed_balance_alert(organization: Organization) -> bool:
    """A `dropped` balance alert for all admins, once: an organization that
    has balance alerts keeps them as its admins left them.
    """
    if BalanceAlert.objects.filter(organization=organization).exists():
        return False
    balance_alert_create(
        organization=organization,
        alert_type=BalanceAlertType.DROPPED,
        threshold=DEMO_BALANCE_ALERT_THRESHOLD,
    )
    return True


def credits_phrase(organization: Organization, *, grants_added: int) -> str:
    """The credit balance and what makes it, for the command's output (now:
    the grants just made are effective from the moment they were made).
    """
    balance = credit_balance_get(organization=organization, now=timezone.now())
    parts = []
    if balance.allowance_remaining is not None:
        parts.append(f"{credits(balance.allowance_remaining)} left of the allowance")
    for grant in balance.grants:
        expiring = (
            f" expiring {grant.expires_at:%b} {grant.expires_at.day}" if grant.expires_at else ""
        )
        parts.append(f"{credits(grant.remaining)} {grant.kind}{expiring}")
    return (
        f"Credit balance: {credits(balance.balance or Decimal(0))} credits ({', '.join(parts)}); "
        f"{grants_added} of {len(DEMO_GRANTS)} demo grants added"
    )


def seed_staff() -> bool:
    """The demo platform staff user (a superuser, in no organization), once;
    whether it was created now. An existing user of that email is left as is.
    """
    if User.objects.filter(email=DEMO_STAFF_EMAIL).exists():
        return False
    User.objects.create_superuser(DEMO_STAFF_EMAIL, DEMO_PASSWORD, name=DEMO_STAFF_NAME)
    return True


def seed_platform_alert() -> bool:
    """Staff's alert to sales, on every organization at 80 % of its allowance,
    once (found again by its name).
    """
    if PlatformAlert.objects.filter(name=DEMO_PLATFORM_ALERT_NAME).exists():
        return False
    platform_alert_save(
        alert=PlatformAlert(
            name=DEMO_PLATFORM_ALERT_NAME,
            threshold_type=PlatformThresholdType.PERCENTAGE,
            threshold=Decimal(80),
            emails=[DEMO_SALES_EMAIL],
        )
    )
    return True


class DemoLogin(NamedTuple):
    email: str
    role: str
    usage: str


def demo_logins(organization: Organization, *, now: datetime) -> list[DemoLogin]:
    """Each demo person who is a member, with their counted usage this period
    against their limit, saying who is at or near it.
    """
    period = current_period(organization, now=now)
    memberships = {
        membership.user.email: membership
        for membership in organization.memberships.select_related("user")
    }
    counted = dict(
        MemberUsage.objects.filter(
            organization=organization, period_start=period.start
        ).values_list("membership_id", "counted")
    )
    rules = limit_rules_get_for_all_members(organization=organization)
    logins = []
    for person in DEMO_PEOPLE:
        membership = memberships.get(person.email)
        if membership is None:
            continue
        used = counted.get(membership.pk, Decimal(0))
        logins.append(
            DemoLogin(
                email=person.email,
                role=str(membership.role),
                usage=usage_phrase(used=used, limit=rules.limit_for(membership.pk)),
            )
        )
    return logins


def credits(value: Decimal) -> str:
    """1,200 rather than 1200.000000."""
    return f"{value.normalize():,f}"


def usage_phrase(*, used: Decimal, limit: Decimal | None) -> str:
    if limit is None:
        return f"{credits(used)} credits this period, no limit"
    phrase = f"{credits(used)} of {credits(limit)} credits this period"
    if used >= limit:
        return f"{phrase}: AT THEIR LIMIT (the gate refuses them)"
    if limit > 0 and used >= limit * NEAR_LIMIT_SHARE:
        return f"{phrase}: near their limit"
    return phrase
