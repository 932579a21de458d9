"""`python manage.py create_meter` (SPEC §10): each bad input refused with
one clear line, nothing stored.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management.base import CommandError

from accounts.models import Membership, Organization
from billing.models import Aggregation, Meter, MeterUsage, UsageEvent
from billing.selectors import current_period, organization_used
from tests.accounts.test_commands import assert_one_line_failure, run, run_cli, shared_database_url
from tests.factories import MeterFactory


@pytest.mark.django_db
def test_create_meter_with_a_price() -> None:
    output = run(
        "create_meter", "storage_gb", "--name", "Storage", "--unit", "GB",
        "--aggregation", "max", "--credits-per-unit", "0.125",
    )  # fmt: skip

    meter = Meter.objects.get()
    assert (meter.key, meter.name, meter.unit) == ("storage_gb", "Storage", "GB")
    assert meter.aggregation == Aggregation.MAX
    assert meter.property == ""
    assert meter.credits_per_unit == Decimal("0.125")
    assert output == [
        "Created meter storage_gb (Storage, in GB): the largest quantity of an event per "
        "period; 0.125 credits per GB."
    ]


@pytest.mark.django_db
def test_create_meter_unique_count_over_a_property_without_a_price() -> None:
    output = run(
        "create_meter", "active_users", "--name", "Active users", "--unit", "users",
        "--aggregation", "unique_count", "--property", "user_id",
    )  # fmt: skip

    meter = Meter.objects.get()
    assert meter.aggregation == Aggregation.UNIQUE_COUNT
    assert meter.property == "user_id"
    assert meter.credits_per_unit is None
    assert "the distinct values of the property 'user_id'" in output[0]
    assert output[0].endswith("no price.")


@pytest.mark.django_db
def test_create_meter_accepts_a_price_of_zero() -> None:
    run(
        "create_meter", "meetings", "--name", "Meetings", "--unit", "meetings",
        "--aggregation", "count", "--credits-per-unit", "0",
    )  # fmt: skip

    assert Meter.objects.get().credits_per_unit == Decimal(0)


GOOD = ["--name", "Storage", "--unit", "GB", "--aggregation", "sum"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["credits", *GOOD], "'credits' names the built-in meter"),
        (["Credits", *GOOD], "'Credits' names the built-in meter"),
        (["has space", *GOOD], "'has space' is not a valid key"),
        (["x" * 65, *GOOD], "key: must be at most 64 characters"),
        (["storage", "--unit", "GB", "--aggregation", "sum"], "required: --name"),
        (["storage", "--name", "S", "--aggregation", "sum"], "required: --unit"),
        (["storage", "--name", "S", "--unit", "GB"], "required: --aggregation"),
        (["storage", "--name", "  ", "--unit", "GB", "--aggregation", "sum"], "--name: must not"),
        (["storage", "--name", "S", "--unit", "", "--aggregation", "sum"], "--unit: must not be"),
        (["storage", "--name", "S" * 101, "--unit", "GB", "--aggregation", "sum"], "name: must"),
        (["storage", "--name", "S", "--unit", "GB", "--aggregation", "avg"], "invalid choice"),
        (["storage", *GOOD, "--property", "user_id"], "only a unique_count meter has a property"),
        (
            ["users", "--name", "U", "--unit", "users", "--aggregation", "unique_count"],
            "a unique_count meter needs the event property",
        ),
        (
            ["users", "--name", "U", "--unit", "u", "--aggregation", "unique_count", "--property"],
            "expected one argument",
        ),
        (["storage", *GOOD, "--credits-per-unit", "-1"], "must not be negative"),
        (["storage", *GOOD, "--credits-per-unit", "0.0000001"], "at most 6 fractional digits"),
        (["storage", *GOOD, "--credits-per-unit", "cheap"], "must be a number"),
        (["storage", *GOOD, "--credits-per-unit", "NaN"], "must be a finite number"),
    ],
)
def test_create_meter_refuses_bad_input(args: list[str], reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        run("create_meter", *args)

    assert not Meter.objects.exists()


@pytest.mark.django_db
def test_create_meter_refuses_a_key_taken() -> None:
    MeterFactory(key="storage", aggregation=Aggregation.MAX, unit="GB")

    with pytest.raises(CommandError, match="a meter with the key 'storage' already exists"):
        run("create_meter", "storage", *GOOD)

    meter = Meter.objects.get()
    assert (meter.aggregation, meter.unit) == (Aggregation.MAX, "GB")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["storage"], "the following arguments are required: --name, --unit, --aggregation"),
        (["storage", *GOOD, "--credits-per-unit", "-2"], "--credits-per-unit: must not be negat"),
        (["storage", "--name", "S", "--unit", "GB", "--aggregation", "mean"], "invalid choice"),
    ],
)
def test_create_meter_cli_reports_bad_arguments_on_one_line(args: list[str], reason: str) -> None:
    result = run_cli("create_meter", *args)

    assert_one_line_failure(result, exit_code=2, reason=reason)


@pytest.mark.django_db(transaction=True)
def test_create_meter_cli_creates_then_refuses_the_same_key_and_credits() -> None:
    database_url = shared_database_url()

    created = run_cli("create_meter", "storage", *GOOD, database_url=database_url)
    taken = run_cli("create_meter", "storage", *GOOD, database_url=database_url)
    built_in = run_cli("create_meter", "credits", *GOOD, database_url=database_url)

    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created meter storage")
    assert_one_line_failure(
        taken,
        exit_code=1,
        reason="CommandError: key: a meter with the key 'storage' already exists.",
    )
    assert_one_line_failure(built_in, exit_code=1, reason="names the built-in meter 'credits'")
    assert list(Meter.objects.values_list("key", flat=True)) == ["storage"]


# seed_demo's meters


def demo_meter_state() -> dict[str, object]:
    return {
        "meters": sorted(Meter.objects.values_list("key", "aggregation", "unit")),
        "values": sorted(
            MeterUsage.objects.values_list("meter__key", "member_key", "period_start", "value")
        ),
        "events": UsageEvent.objects.exclude(meter="credits").count(),
    }


@pytest.mark.django_db
def test_seed_demo_defines_two_meters_and_a_little_usage_once() -> None:
    output = run("seed_demo")
    first = demo_meter_state()
    again = run("seed_demo")

    organization = Organization.objects.get(slug="acme")
    period = current_period(organization)
    assert first["meters"] == [("meetings", "count", "meetings"), ("storage_gb", "max", "GB")]
    organization_values = dict(
        MeterUsage.objects.filter(
            organization=organization, period_start=period.start, member_key=0
        ).values_list("meter__key", "value")
    )
    assert organization_values == {"storage_gb": Decimal("31.5"), "meetings": Decimal(12)}
    priya = Membership.objects.get(organization=organization, user__email="priya@acme.test")
    assert MeterUsage.objects.get(meter__key="storage_gb", member_key=priya.pk).value == Decimal(
        "18.25"
    )
    # No price: the meters' events cost nothing, the demo's credits stay as they were.
    assert organization_used(organization=organization, period=period) == Decimal(3575)
    assert "Meters: storage_gb (max, GB) and meetings (count, meetings), 2 of 2 added; " \
        "their events this period: 17 added." in output  # fmt: skip
    assert demo_meter_state() == first
    assert any(line.endswith("0 of 2 added; their events this period: 0 added.") for line in again)


@pytest.mark.django_db
def test_seed_demo_keeps_a_meter_staff_made_with_a_demo_key() -> None:
    MeterFactory(key="meetings", name="Calls", unit="calls", aggregation=Aggregation.SUM)

    output = run("seed_demo")

    meter = Meter.objects.get(key="meetings")
    assert (meter.name, meter.aggregation) == ("Calls", "sum")
    assert not MeterUsage.objects.filter(meter=meter).exists()
    assert any("1 of 2 added; their events this period: 5 added." in line for line in output)
