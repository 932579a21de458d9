"""Meters on Monitor usage (/usage/) and in its CSV export (SPEC §10): a card
per meter with its value this period, a chart per day for sum, count and
max, a column per meter in the CSV; from the totals, in a bounded number of
queries.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Aggregation, MeterDailyUsage, MeterUsage
from tests.billing.test_usage_monitor import csv_rows, large_organization  # noqa: F401
from tests.factories import MembershipFactory, MeterFactory, meter_daily_row, meter_usage_row
from tests.fixtures import logged_in
from tests.helpers import assert_shows, clock_held_at, limits_on, spend

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 15, 12, 30, tzinfo=UTC)
PERIOD_START = datetime(2025, 6, 1, tzinfo=UTC)
EARLIER_PERIOD = datetime(2025, 5, 1, tzinfo=UTC)

frozen_time = clock_held_at(NOW)
METER_COLUMNS = ("active_users", "meetings", "storage_gb", "tokens")


def chart_of(html: str, key: str) -> dict:
    found = re.search(
        rf'<script id="meter-chart-{key}-data" type="application/json">(.*?)</script>', html, re.S
    )
    assert found, f"the chart of {key} is on the page"
    return json.loads(found.group(1))


def card_of(html: str, key: str) -> str:
    found = re.search(
        rf'<section class="card meter-card" aria-labelledby="meter-{key}-title">(.*?)</section>',
        html,
        re.S,
    )
    assert found, f"the card of {key} is on the page"
    return found.group(1)


@pytest.fixture
def meters():
    return {
        "storage": MeterFactory(
            key="storage_gb", name="Storage", unit="GB", aggregation=Aggregation.MAX
        ),
        "meetings": MeterFactory(
            key="meetings", name="Meetings", unit="meetings", aggregation=Aggregation.COUNT
        ),
        "tokens": MeterFactory(
            key="tokens", name="Tokens", unit="tokens", aggregation=Aggregation.SUM
        ),
        "users": MeterFactory(
            key="active_users",
            name="Active users",
            unit="users",
            aggregation=Aggregation.UNIQUE_COUNT,
            property="user_id",
        ),
    }


@pytest.fixture
def usage(organization, member, other_organization, meters):
    """Values this period, one of an earlier period and one of another organization."""
    storage, meetings, tokens, users = (
        meters[name] for name in ("storage", "meetings", "tokens", "users")
    )
    meter_usage_row(storage, organization, "1234.5", period_start=PERIOD_START)
    meter_usage_row(meetings, organization, 1200, period_start=PERIOD_START)
    meter_usage_row(tokens, organization, "0.000001", period_start=PERIOD_START)
    meter_usage_row(users, organization, 3, period_start=PERIOD_START)
    meter_usage_row(meetings, organization, 999, period_start=EARLIER_PERIOD)
    meter_usage_row(meetings, other_organization, 55, period_start=PERIOD_START)
    meter_daily_row(storage, organization, date(2025, 6, 2), "1000.25")
    meter_daily_row(storage, organization, date(2025, 6, 15), "1234.5")
    meter_daily_row(meetings, organization, date(2025, 6, 3), 700)
    meter_daily_row(meetings, organization, date(2025, 6, 15), 500)
    meter_daily_row(meetings, organization, date(2025, 5, 31), 999)  # the period before
    meter_daily_row(meetings, other_organization, date(2025, 6, 3), 55)


def test_a_card_per_meter_with_its_value_this_period(owner, usage):
    html = logged_in(owner).get("/usage/").content.decode()

    # Counts as whole numbers; quantities exact, every digit; the unit beside them.
    assert_shows(
        card_of(html, "meetings"),
        '<h2 id="meter-meetings-title">Meetings</h2>',
        "Events counted this period, in meetings.",
        '<strong class="stat-value">1,200</strong> <span class="stat-none">meetings</span>',
    )
    assert_shows(
        card_of(html, "storage_gb"),
        "Largest quantity reported this period, in GB.",
        '<strong class="stat-value">1,234.5</strong> <span class="stat-none">GB</span>',
    )
    assert_shows(
        card_of(html, "tokens"),
        "Sum of the quantities reported this period, in tokens.",
        '<strong class="stat-value">0.000001</strong>',
    )
    assert_shows(
        card_of(html, "active_users"),
        "Distinct values of the property user_id this period, in users.",
        '<strong class="stat-value">3</strong> <span class="stat-none">users</span>',
        "no chart per day",
    )
    # By key, after the credits' own cards.
    order = [html.index(f'id="meter-{key}-title"') for key in ("active_users", "meetings")]
    assert html.index("daily-usage-title") < order[0] < order[1]


def test_a_meter_without_usage_shows_0(owner, meters):
    html = logged_in(owner).get("/usage/").content.decode()

    assert '<strong class="stat-value">0</strong> <span class="stat-none">GB</span>' in html
    assert chart_of(html, "storage_gb")["used"][:15] == ["0"] * 15


def test_no_meters_no_meter_cards(owner):
    html = logged_in(owner).get("/usage/").content.decode()

    assert "meter-card" not in html
    assert "meter-chart" not in html


def test_sum_count_and_max_meters_have_a_chart_per_day(owner, usage):
    html = logged_in(owner).get("/usage/").content.decode()

    meetings = chart_of(html, "meetings")
    assert len(meetings["days"]) == len(meetings["used"]) == 30
    assert meetings["used"][:4] == ["0", "0", "700", "0"]
    assert meetings["used"][14] == "500"
    assert meetings["used"][15:] == [None] * 15  # the days to come
    assert (meetings["label"], meetings["unit"]) == ("Meetings", "meetings")
    storage = chart_of(html, "storage_gb")
    assert storage["used"][1] == "1000.25"
    assert "meter-chart-active_users" not in html  # a day's distinct values are not kept
    assert chart_of(html, "tokens")["used"][14] == "0"
    assert_shows(
        card_of(html, "meetings"),
        '<canvas id="meter-chart-meetings" role="img" data-chart-source="meter-chart-meetings-data"'
        ' aria-label="Bar chart of Meetings, events per day in meetings, from June 1 to June 30, '
        '2025. The same figures are in the table below.">',
        '<th scope="col" class="num">Meetings (meetings)</th>',
        '<time datetime="2025-06-03">Tue, Jun 3</time></th><td class="num">700</td>',
        '<th scope="row">Total</th><td class="num">1,200</td>',
    )
    # A max meter's last row is the largest day, not a sum.
    assert '<th scope="row">Largest</th><td class="num">1,234.5</td>' in card_of(html, "storage_gb")


def test_the_credits_chart_is_unchanged_beside_them(owner, member, usage):
    spend(member, 7, at=datetime(2025, 6, 3, 9, 0, tzinfo=UTC))

    html = logged_in(owner).get("/usage/").content.decode()

    assert_shows(
        html,
        '<canvas id="usage-chart" role="img" data-chart-source="usage-chart-data"'
        ' aria-label="Bar chart of credits used per day from June 1 to June 30, 2025: 7 credits'
        ' so far. The same figures are in the table below.">',
        '<script id="usage-chart-data" type="application/json">',
        '<th scope="col" class="num">Credits used</th>',
    )


def test_the_page_reads_the_meter_totals_in_three_queries(owner, usage):
    client = logged_in(owner)
    client.get("/usage/")

    with CaptureQueriesContext(connection) as queries:
        client.get("/usage/")

    meter_tables = [q["sql"] for q in queries if '"billing_meter' in q["sql"]]
    assert len(meter_tables) == 3
    [totals] = [sql for sql in meter_tables if f'FROM "{MeterUsage._meta.db_table}"' in sql]
    assert '"member_key" = 0' in totals  # the organization's own rows, not every member's
    assert MeterDailyUsage._meta.db_table in " ".join(meter_tables)


def test_page_and_export_queries_stay_bounded_with_meters_for_thousands_of_members(
    owner,
    large_organization,  # noqa: F811  (the fixture imported above)
    meters,
    django_assert_max_num_queries,
):
    memberships = list(large_organization.memberships.exclude(pk=owner.pk)[:300])
    for meter in meters.values():
        meter_usage_row(meter, large_organization, 9, period_start=PERIOD_START)
        for membership in memberships:
            meter_usage_row(
                meter, large_organization, 1, period_start=PERIOD_START, membership=membership
            )
    client = logged_in(owner)
    client.get("/usage/")

    # The page's 10 (test_usage_monitor.py), and the meters, their totals, their days.
    with django_assert_max_num_queries(13):
        assert client.get("/usage/").status_code == 200
    # The export's 6, and the meters and their totals.
    with django_assert_max_num_queries(8):
        rows = csv_rows(client.get("/usage/export.csv"))

    assert len(rows) == 1501


# The CSV export


def test_export_has_a_column_per_meter_with_each_members_value(owner, member, organization, meters):
    limits_on(organization, 500)
    spend(member, "12.5")
    spend(owner, 2)
    quiet = MembershipFactory(
        organization=organization, user__email="quiet@acme.test", external_id="quiet"
    )
    for membership, meter, value in (
        (member, meters["storage"], "3.25"),
        (member, meters["meetings"], 4),
        (quiet, meters["users"], 1),
        (owner, meters["tokens"], "0.000001"),
    ):
        meter_usage_row(
            meter, organization, value, period_start=PERIOD_START, membership=membership
        )
    meter_usage_row(meters["meetings"], organization, 99, period_start=EARLIER_PERIOD)

    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))

    assert rows == [
        [*("user", "email", "used", "counted", "limit"), *METER_COLUMNS],
        ["member@acme.test", "member@acme.test", "12.5", "12.5", "500", "0", "4", "3.25", "0"],
        ["owner@acme.test", "owner@acme.test", "2", "2", "500", "0", "0", "0", "0.000001"],
        # Meter values but no credits: after the others.
        ["quiet", "quiet@acme.test", "0", "0", "500", "1", "0", "0", "0"],
    ]


def test_export_without_meters_keeps_its_columns(owner, member):
    spend(member, 3)

    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))

    assert rows == [
        ["user", "email", "used", "counted", "limit"],
        ["member@acme.test", "member@acme.test", "3", "3", ""],
    ]


def test_a_meter_named_like_a_column_gets_a_column_of_its_own(owner, member):
    MeterFactory(key="used", aggregation=Aggregation.COUNT)
    spend(member, 3)

    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))

    assert rows[0] == ["user", "email", "used", "counted", "limit", "meter:used"]
    assert rows[1][-1] == "0"
