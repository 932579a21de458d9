"""Operator commands: create_org, add_member, create_api_key, seed_demo.

Good paths go through `call_command`; bad input is also checked through the
real CLI (`manage.py` in a subprocess), where the contract is "exit non-zero
with one line on stderr".
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
import time_machine
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from accounts.management.commands.seed_demo import DEMO_PEOPLE
from accounts.models import ApiKey, Membership, Organization, Plan, Role, User
from accounts.services import api_key_authenticate
from alerts.models import (
    BalanceAlert,
    BalanceAlertStatus,
    BalanceAlertType,
    OrganizationAlert,
    PlanAlert,
    Recipients,
)
from alerts.services.changes import limit_policy_update
from alerts.services.credit_settings import balance_alert_create
from billing.balance import credit_balance_get
from billing.models import (
    CreditGrant,
    CreditLedgerEntry,
    CustomLimit,
    GrantKind,
    GrantStatus,
    LedgerEntryType,
    MemberUsage,
    OrganizationUsage,
    SourceUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.selectors import current_period, members_over_budget, organization_used
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, UserFactory

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run(name: str, *args: str) -> list[str]:
    """Run a command in-process; return its stdout lines."""
    stdout = StringIO()
    call_command(name, *args, stdout=stdout)
    return stdout.getvalue().splitlines()


def run_cli(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `manage.py` as an operator would.

    Without `database_url` the command sees the non-test database, which may
    not exist: use it only for input refused before the database is touched.
    """
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def shared_database_url() -> str:
    """A URL of the database pytest-django created, for a subprocess to share."""
    settings = connection.settings_dict
    credentials = quote(settings["USER"], safe="")
    if settings["PASSWORD"]:
        credentials += ":" + quote(settings["PASSWORD"], safe="")
    port = f":{settings['PORT']}" if settings["PORT"] else ""
    return f"postgres://{credentials}@{settings['HOST']}{port}/{settings['NAME']}"


def assert_one_line_failure(
    result: subprocess.CompletedProcess[str], *, exit_code: int, reason: str
) -> None:
    assert result.returncode == exit_code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].strip()
    assert reason in lines[0]


# create_org


@pytest.mark.django_db
def test_create_org_with_allowance_and_anchor_day() -> None:
    output = run(
        "create_org", "initech", "--name", "Initech", "--allowance", "2500.5", "--anchor-day", "15"
    )

    organization = Organization.objects.get(slug="initech")
    assert organization.name == "Initech"
    assert organization.credit_allowance == Decimal("2500.5")
    assert organization.anchor_day == 15
    assert organization.block_when_exhausted is True
    assert output == [
        "Created organization initech (Initech) with an allowance of 2500.5 credits per period; "
        "periods start on day 15 of the month."
    ]


@pytest.mark.django_db
def test_create_org_defaults_to_no_allowance_and_day_one() -> None:
    output = run("create_org", "initech", "--name", "Initech")

    organization = Organization.objects.get(slug="initech")
    assert organization.credit_allowance is None
    assert organization.anchor_day == 1
    assert len(output) == 1
    assert "no allowance" in output[0]


@pytest.mark.django_db
def test_create_org_refuses_a_taken_slug(organization: Organization) -> None:
    with pytest.raises(CommandError, match="already exists"):
        run("create_org", "acme", "--name", "Another Acme")

    assert Organization.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["has space", "--name", "X"], "not a valid slug"),
        (["initech", "--name", "   "], "must not be empty"),
        (["initech", "--name", "X", "--allowance", "0"], "must be greater than 0"),
        (["initech", "--name", "X", "--allowance", "-3"], "must be greater than 0"),
        (["initech", "--name", "X", "--allowance", "lots"], "must be a number"),
        (["initech", "--name", "X", "--allowance", "1.0000001"], "at most 6 fractional digits"),
        (["initech", "--name", "X", "--anchor-day", "0"], "from 1 to 28"),
        (["initech", "--name", "X", "--anchor-day", "29"], "from 1 to 28"),
        (["initech", "--name", "X", "--anchor-day", "1.5"], "from 1 to 28"),
        (["initech"], "required: --name"),
    ],
)
def test_create_org_refuses_bad_input(args: list[str], reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        run("create_org", *args)

    assert not Organization.objects.exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["initech"], "the following arguments are required: --name"),
        (["initech", "--name", "X", "--allowance", "0"], "--allowance: must be greater than 0"),
        (["initech", "--name", "X", "--allowance", "0.1234567"], "at most 6 fractional digits"),
        (["initech", "--name", "X", "--anchor-day", "31"], "--anchor-day: must be a day"),
        (["initech", "--name", "X", "--anchor-day", "first"], "--anchor-day: must be a day"),
        (["initech", "--name", "X", "--colour", "red"], "unrecognized arguments: --colour"),
    ],
)
def test_create_org_cli_reports_bad_arguments_on_one_line(args: list[str], reason: str) -> None:
    result = run_cli("create_org", *args)

    assert_one_line_failure(result, exit_code=2, reason=reason)


@pytest.mark.django_db(transaction=True)
def test_create_org_cli_creates_then_refuses_the_same_slug() -> None:
    database_url = shared_database_url()

    created = run_cli("create_org", "initech", "--name", "Initech", database_url=database_url)
    taken = run_cli("create_org", "initech", "--name", "Initech", database_url=database_url)

    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created organization initech")
    assert_one_line_failure(
        taken,
        exit_code=1,
        reason="CommandError: An organization with the slug 'initech' already exists.",
    )
    assert Organization.objects.filter(slug="initech").count() == 1


# add_member


@pytest.mark.django_db
def test_add_member_creates_a_user_who_can_log_in(organization: Organization) -> None:
    output = run(
        "add_member", "acme", "Dana@Acme.test", "--role", "admin",
        "--name", "Dana Scully", "--password", "s3cret-pass",
    )  # fmt: skip

    membership = Membership.objects.select_related("user").get(organization=organization)
    assert membership.user.email == "dana@acme.test"
    assert membership.user.name == "Dana Scully"
    assert membership.role == Role.ADMIN
    assert membership.external_id == "dana@acme.test"
    assert authenticate(username="dana@acme.test", password="s3cret-pass") == membership.user
    assert output == ["Added dana@acme.test to acme as admin (user id 'dana@acme.test')."]


@pytest.mark.django_db
def test_add_member_adds_an_existing_user_and_keeps_their_password(
    organization: Organization, outsider: Membership
) -> None:
    output = run(
        "add_member", "acme", "admin@globex.test", "--role", "member", "--external-id", "u-7"
    )

    membership = Membership.objects.get(organization=organization, user=outsider.user)
    assert membership.role == Role.MEMBER
    assert membership.external_id == "u-7"
    assert User.objects.count() == 1
    assert authenticate(username="admin@globex.test", password=DEFAULT_PASSWORD) == outsider.user
    assert "(user id 'u-7')" in output[0]


@pytest.mark.django_db
def test_add_member_without_password_says_so(organization: Organization) -> None:
    output = run("add_member", "acme", "new@acme.test", "--role", "member")

    assert not User.objects.get(email="new@acme.test").has_usable_password()
    assert output[0].endswith("They have no password yet.")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["nowhere", "x@acme.test", "--role", "member"], "No organization with the slug 'nowhere'"),
        (["acme", "not-an-email", "--role", "member"], "is not a valid email address"),
        (["acme", "member@acme.test", "--role", "admin"], "already a member of acme"),
        (["acme", "x@acme.test", "--role", "member", "--external-id", "member@acme.test"],
         "already taken"),
        (["acme", "x@acme.test", "--role", "owner"], "invalid choice: 'owner'"),
        (["acme", "x@acme.test"], "required: --role"),
        (["acme", "x@acme.test", "--role", "member", "--password", ""], "must not be empty"),
    ],
)  # fmt: skip
def test_add_member_refuses_bad_input(member: Membership, args: list[str], reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        run("add_member", *args)

    assert Membership.objects.count() == 1
    assert not User.objects.filter(email="x@acme.test").exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["acme", "x@acme.test"], "the following arguments are required: --role"),
        (["acme", "x@acme.test", "--role", "owner"], "argument --role: invalid choice: 'owner'"),
        (["acme"], "the following arguments are required: email, --role"),
    ],
)
def test_add_member_cli_reports_bad_arguments_on_one_line(args: list[str], reason: str) -> None:
    result = run_cli("add_member", *args)

    assert_one_line_failure(result, exit_code=2, reason=reason)


@pytest.mark.django_db(transaction=True)
def test_add_member_cli_reports_refused_input_on_one_line(member: Membership) -> None:
    database_url = shared_database_url()

    unknown = run_cli("add_member", "nowhere", "x@acme.test", "--role", "member",
                      database_url=database_url)  # fmt: skip
    duplicate = run_cli("add_member", "acme", "member@acme.test", "--role", "member",
                        database_url=database_url)  # fmt: skip

    assert_one_line_failure(
        unknown, exit_code=1, reason="CommandError: No organization with the slug 'nowhere'."
    )
    assert_one_line_failure(duplicate, exit_code=1, reason="already a member of acme")
    assert Membership.objects.count() == 1


# create_api_key


@pytest.mark.django_db
def test_create_api_key_prints_a_working_key_alone_on_the_last_line(
    organization: Organization,
) -> None:
    output = run("create_api_key", "acme", "--name", "CI")

    api_key = api_key_authenticate(raw_key=output[-1])
    assert api_key is not None
    assert api_key.organization == organization
    assert api_key.name == "CI"
    assert output[-1] == output[-1].strip()
    assert api_key.prefix in output[0]


@pytest.mark.django_db
def test_create_api_key_makes_a_new_key_each_time(organization: Organization) -> None:
    first = run("create_api_key", "acme")[-1]
    second = run("create_api_key", "acme")[-1]

    assert first != second
    assert ApiKey.objects.filter(organization=organization).count() == 2


@pytest.mark.django_db
def test_create_api_key_refuses_an_unknown_slug() -> None:
    with pytest.raises(CommandError, match="No organization with the slug 'nowhere'"):
        run("create_api_key", "nowhere")

    assert not ApiKey.objects.exists()


def test_create_api_key_cli_requires_a_slug() -> None:
    result = run_cli("create_api_key")

    assert_one_line_failure(result, exit_code=2, reason="required: slug")


@pytest.mark.django_db(transaction=True)
def test_create_api_key_cli(organization: Organization) -> None:
    database_url = shared_database_url()

    created = run_cli("create_api_key", "acme", database_url=database_url)
    unknown = run_cli("create_api_key", "nowhere", database_url=database_url)

    assert created.returncode == 0, created.stderr
    assert api_key_authenticate(raw_key=created.stdout.splitlines()[-1]) is not None
    assert_one_line_failure(
        unknown, exit_code=1, reason="CommandError: No organization with the slug 'nowhere'."
    )


# seed_demo


def demo_state() -> dict[str, object]:
    """What seed_demo writes, to compare one run with the next."""
    return {
        "organizations": list(
            Organization.objects.values_list("slug", "name", "own_credit_allowance")
        ),
        "users": sorted(User.objects.values_list("email", "name", "password")),
        "memberships": sorted(Membership.objects.values_list("user__email", "role", "external_id")),
        "api_keys": list(ApiKey.objects.values_list("pk", "name", "revoked_at")),
        "plans": sorted(Plan.objects.values_list("key", "name", "credit_allowance")),
        "plan_alerts": sorted(PlanAlert.objects.values_list("plan__key", "threshold")),
        "on_plans": sorted(Organization.objects.values_list("slug", "plan__key")),
        "alerts": sorted(OrganizationAlert.objects.values_list("organization__slug", "threshold")),
    }


def printed_api_key(output: list[str]) -> str:
    (line,) = [line for line in output if line.startswith("Demo API key (shown only this once): ")]
    return line.rsplit(" ", 1)[-1]


@pytest.mark.django_db
def test_seed_demo_creates_the_demo_organization() -> None:
    output = run("seed_demo")

    organization = Organization.objects.get(slug="acme")
    assert organization.name == "Acme Inc"
    assert organization.credit_allowance == Decimal(10000)
    assert organization.anchor_day == 1
    roles = list(organization.memberships.values_list("role", flat=True))
    assert roles.count(Role.ADMIN) == 2
    assert roles.count(Role.MEMBER) == len(DEMO_PEOPLE) - 2 >= 8
    assert (
        "Admin login: admin@acme.test / headroom-demo (every demo login below has this password)"
        in output
    )
    api_key = api_key_authenticate(raw_key=printed_api_key(output))
    assert api_key is not None
    assert api_key.organization == organization
    # Plans (SPEC §12): acme on Team, with the alert it inherits.
    assert sorted(Plan.objects.values_list("key", flat=True)) == ["free", "team"]
    assert organization.plan.key == "team"
    (inherited,) = OrganizationAlert.objects.filter(organization=organization)
    assert (inherited.source, inherited.threshold_type, inherited.threshold) == (
        "plan",
        "percentage",
        Decimal(90),
    )
    assert any(line.startswith("Plans: Free (free) and Team (team)") for line in output)


@pytest.mark.django_db
def test_seed_demo_people_can_log_in() -> None:
    run("seed_demo")

    admin = authenticate(username="admin@acme.test", password="headroom-demo")
    assert admin is not None
    assert Membership.objects.get(user=admin, organization__slug="acme").is_admin
    for person in DEMO_PEOPLE:
        assert authenticate(username=person.email, password="headroom-demo") is not None


@pytest.mark.django_db
def test_seed_demo_twice_changes_nothing() -> None:
    run("seed_demo")
    state_after_first_run = demo_state()

    output = run("seed_demo")

    assert demo_state() == state_after_first_run
    assert ApiKey.objects.count() == 1
    assert Membership.objects.count() == len(DEMO_PEOPLE)
    assert any(line.startswith("Admin login: admin@acme.test / headroom-demo") for line in output)
    assert "Staff login (the Django admin, /admin/): staff@headroom.local / headroom-demo" in output
    assert not any(line.startswith("Demo API key (shown only this once)") for line in output)
    assert "already there" in output[0]


def demo_usage_state() -> dict[str, object]:
    """The limits and usage totals seed_demo writes, to compare two runs."""
    return {
        "policy": list(
            UserLimitPolicy.objects.values_list(
                "enabled", "default_limit", "excluded_sources", "admins__user__email"
            )
        ),
        "custom_limits": sorted(
            CustomLimit.objects.values_list("membership__user__email", "limit")
        ),
        "events": sorted(UsageEvent.objects.values_list("idempotency_key", "credits")),
        "members": sorted(
            MemberUsage.objects.values_list("membership__user__email", "used", "counted")
        ),
        "organization": list(OrganizationUsage.objects.values_list("period_start", "used")),
        "sources": sorted(
            SourceUsage.objects.values_list("membership__user__email", "source", "used")
        ),
    }


@pytest.mark.django_db
def test_seed_demo_sets_limits_and_usage_this_period() -> None:
    output = run("seed_demo")

    organization = Organization.objects.get(slug="acme")
    policy = UserLimitPolicy.objects.get(organization=organization)
    assert (policy.enabled, policy.default_limit, policy.excluded_sources) == (
        True,
        Decimal(500),
        ["workflow"],
    )
    assert [admin.user.email for admin in policy.admins.all()] == ["admin@acme.test"]
    custom_limits = dict(CustomLimit.objects.values_list("membership__user__email", "limit"))
    assert custom_limits == {"sam@acme.test": Decimal(1000), "jordan@acme.test": None}
    period = current_period(organization)
    usage = {
        email: (used, counted)
        for email, used, counted in MemberUsage.objects.filter(
            period_start=period.start
        ).values_list("membership__user__email", "used", "counted")
    }
    assert usage["priya@acme.test"] == (Decimal(650), Decimal(500))  # workflows excluded
    assert usage["sam@acme.test"] == (Decimal(640), Decimal(640))
    assert usage["jordan@acme.test"] == (Decimal(1200), Decimal(1200))
    assert len(usage) >= 5
    over = members_over_budget(organization=organization, period=period)
    assert [row.membership.user.email for row in over] == ["priya@acme.test"]
    assert organization_used(organization=organization, period=period) == Decimal(3575)
    assert UsageEvent.objects.filter(timestamp__gt=timezone.now()).count() == 0
    assert any("usage this period: 60 events added" in line for line in output)


@pytest.mark.django_db
def test_seed_demo_twice_leaves_the_same_limits_and_totals() -> None:
    run("seed_demo")
    state_after_first_run = demo_usage_state()

    output = run("seed_demo")

    assert demo_usage_state() == state_after_first_run
    assert any("already configured" in line for line in output)
    assert any("usage this period: 0 events added" in line for line in output)


@pytest.mark.django_db
def test_seed_demo_prints_every_login_and_who_is_at_or_near_their_limit() -> None:
    output = run("seed_demo")

    logins = {line.split()[1]: line.split(None, 2)[2] for line in output if line.startswith("  ")}
    assert set(logins) == {person.email for person in DEMO_PEOPLE}
    roles = {line.split()[1]: line.split()[0] for line in output if line.startswith("  ")}
    assert roles == {person.email: person.role.value for person in DEMO_PEOPLE}
    # Counted usage (workflows excluded) against each limit, from what was seeded.
    assert logins["priya@acme.test"] == (
        "500 of 500 credits this period: AT THEIR LIMIT (the gate refuses them)"
    )
    assert logins["taylor@acme.test"] == "420 of 500 credits this period: near their limit"
    assert logins["sam@acme.test"] == "640 of 1,000 credits this period"
    assert logins["jordan@acme.test"] == "1,200 credits this period, no limit"
    assert logins["diego@acme.test"] == "0 of 500 credits this period"
    at_or_near = [
        email
        for email, usage in logins.items()
        if "AT THEIR LIMIT" in usage or "near their limit" in usage
    ]
    assert at_or_near == ["priya@acme.test", "taylor@acme.test"]
    # Every printed login works with the printed password.
    for email in logins:
        assert authenticate(username=email, password="headroom-demo") is not None


@pytest.mark.django_db
def test_seed_demo_creates_a_staff_login_for_the_django_admin() -> None:
    output = run("seed_demo")

    assert (
        "Staff login (the Django admin, /admin/): staff@headroom.local / headroom-demo (created)"
        in output
    )
    staff = authenticate(username="staff@headroom.local", password="headroom-demo")
    assert staff is not None
    assert staff.is_staff and staff.is_superuser
    assert not Membership.objects.filter(user=staff).exists()
    staff.set_password("changed-by-the-operator")
    staff.save()

    again = run("seed_demo")

    assert "Staff login (the Django admin, /admin/): staff@headroom.local / headroom-demo" in again
    assert User.objects.filter(email="staff@headroom.local").count() == 1
    # A rerun leaves an existing staff user as it is.
    assert authenticate(username="staff@headroom.local", password="changed-by-the-operator")


@pytest.mark.django_db
def test_seed_demo_leaves_an_existing_limits_policy_alone(organization: Organization) -> None:
    limit_policy_update(organization=organization, enabled=False, default_limit=Decimal(7))

    run("seed_demo")

    policy = UserLimitPolicy.objects.get(organization=organization)
    assert (policy.enabled, policy.default_limit) == (False, Decimal(7))
    assert not CustomLimit.objects.exists()


@pytest.mark.django_db
def test_seed_demo_completes_a_partly_seeded_organization(organization: Organization) -> None:
    MembershipFactory(organization=organization, user=UserFactory(email="sam@acme.test"))

    run("seed_demo")

    assert Membership.objects.filter(organization=organization).count() == len(DEMO_PEOPLE)
    assert organization.api_keys.count() == 1


def demo_credits_state() -> dict[str, object]:
    """The grants, their ledger and the balance alerts seed_demo writes."""
    return {
        "grants": sorted(
            CreditGrant.objects.values_list(
                "pk", "kind", "credits", "remaining", "expires_at", "idempotency_key"
            )
        ),
        "ledger": sorted(
            CreditLedgerEntry.objects.values_list("pk", "grant_id", "type", "credits")
        ),
        "alerts": list(BalanceAlert.objects.values_list("pk", "type", "threshold", "notify")),
    }


@pytest.mark.django_db
def test_seed_demo_grants_credits_and_sets_a_balance_alert() -> None:
    output = run("seed_demo")

    organization = Organization.objects.get(slug="acme")
    now = timezone.now()
    grants = {grant.kind: grant for grant in CreditGrant.objects.filter(organization=organization)}
    assert set(grants) == {GrantKind.PURCHASED, GrantKind.PROMOTIONAL}
    purchased, promotional = grants[GrantKind.PURCHASED], grants[GrantKind.PROMOTIONAL]
    assert (purchased.credits, purchased.remaining, purchased.expires_at) == (
        Decimal(5000),
        Decimal(5000),
        None,
    )
    assert (promotional.credits, promotional.remaining) == (Decimal(1000), Decimal(1000))
    assert promotional.expires_at is not None
    assert now + timedelta(days=7) < promotional.expires_at <= now + timedelta(days=20)
    assert {purchased.status, promotional.status} == {GrantStatus.ACTIVE}
    # Through the service: each grant has its ledger entry.
    entries = CreditLedgerEntry.objects.filter(organization=organization)
    assert sorted(entries.values_list("type", "credits")) == [
        (LedgerEntryType.GRANT, Decimal(1000)),
        (LedgerEntryType.GRANT, Decimal(5000)),
    ]
    balance = credit_balance_get(organization=organization, now=now)
    assert balance.balance == Decimal(10000) - Decimal(3575) + Decimal(6000)
    (alert,) = BalanceAlert.objects.filter(organization=organization)
    assert (alert.type, alert.threshold, alert.notify, alert.status) == (
        BalanceAlertType.DROPPED,
        Decimal(2000),
        Recipients.ALL_ADMINS,
        BalanceAlertStatus.ARMED,
    )
    (line,) = [line for line in output if line.startswith("Credit balance:")]
    assert line.startswith("Credit balance: 12,425 credits (6,425 left of the allowance, ")
    assert "1,000 promotional expiring" in line and "5,000 purchased" in line
    assert line.endswith("2 of 2 demo grants added; a balance alert below 2,000 credits added.")


@pytest.mark.django_db
def test_seed_demo_twice_grants_the_credits_and_sets_the_alert_once() -> None:
    run("seed_demo")
    state_after_first_run = demo_credits_state()

    output = run("seed_demo")

    assert demo_credits_state() == state_after_first_run
    assert CreditGrant.objects.count() == 2
    assert BalanceAlert.objects.count() == 1
    (line,) = [line for line in output if line.startswith("Credit balance:")]
    assert line.endswith(
        "0 of 2 demo grants added; a balance alert below 2,000 credits already there."
    )


@pytest.mark.django_db
def test_seed_demo_after_the_promotion_expired_does_not_grant_it_again() -> None:
    run("seed_demo")
    grants = sorted(CreditGrant.objects.values_list("pk", flat=True))

    with time_machine.travel(timezone.now() + timedelta(days=40), tick=False):
        output = run("seed_demo")

    assert sorted(CreditGrant.objects.values_list("pk", flat=True)) == grants
    assert any("0 of 2 demo grants added" in line for line in output)


@pytest.mark.django_db
def test_seed_demo_leaves_existing_balance_alerts_alone(
    organization: Organization, owner: Membership
) -> None:
    mine = balance_alert_create(organization=organization, alert_type="depleted")

    output = run("seed_demo")

    assert list(BalanceAlert.objects.all()) == [mine]
    assert any("balance alert below 2,000 credits already there" in line for line in output)


def test_seed_demo_cli_refuses_arguments() -> None:
    result = run_cli("seed_demo", "--org", "globex")

    assert_one_line_failure(result, exit_code=2, reason="unrecognized arguments: --org globex")


@pytest.mark.django_db(transaction=True)
def test_seed_demo_cli_runs_twice() -> None:
    database_url = shared_database_url()

    first = run_cli("seed_demo", database_url=database_url)
    second = run_cli("seed_demo", database_url=database_url)

    assert (first.returncode, first.stderr) == (0, "")
    assert (second.returncode, second.stderr) == (0, "")
    assert api_key_authenticate(raw_key=printed_api_key(first.stdout.splitlines())) is not None
    assert ApiKey.objects.count() == 1
    assert Membership.objects.count() == len(DEMO_PEOPLE)
