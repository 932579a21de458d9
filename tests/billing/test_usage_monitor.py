"""Monitor usage (/usage/) and its CSV export (/usage/export.csv)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Organization, Role, User
from alerts.services.changes import custom_limit_set
from billing.models import (
    CustomLimit,
    DailyUsage,
    MemberUsage,
    OrganizationUsage,
    SourceUsage,
    UsageEvent,
)
from tests.factories import MembershipFactory
from tests.fixtures import logged_in
from tests.helpers import assert_shows, clock_held_at, consume, ingest, limits_on, page_html, spend

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2025, 6, 15, 12, 30, tzinfo=UTC)
PERIOD_START = datetime(2025, 6, 1, tzinfo=UTC)


frozen_time = clock_held_at(NOW)


def chart_data(html: str) -> dict:
    found = re.search(
        r'<script id="usage-chart-data" type="application/json">(.*?)</script>', html, re.S
    )
    assert found, "the chart's data is on the page"
    return json.loads(found.group(1))


def csv_rows(response) -> list[list[str]]:
    body = response.content.decode()
    return list(csv.reader(io.StringIO(body)))


# Who may see it


def test_members_get_403(member):
    for path in ("/usage/", "/usage/export.csv"):
        response = logged_in(member).get(path)

        assert response.status_code == 403
        assert "Only Admins can configure credit alerts and limits." in response.content.decode()


def test_anonymous_visitors_are_sent_to_log_in(db):
    for path in ("/usage/", "/usage/export.csv"):
        response = Client().get(path)

        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={path}"


def test_only_get(owner):
    assert logged_in(owner).post("/usage/").status_code == 405
    assert logged_in(owner).post("/usage/export.csv").status_code == 405


def test_an_admin_sees_only_their_organization(owner, outsider):
    spend(outsider, 777)

    html = logged_in(owner).get("/usage/").content.decode()
    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))

    assert "777" not in html
    assert "admin@globex.test" not in html
    assert rows == [["user", "email", "used", "counted", "limit"]]


# Usage this period against the allowance


def test_usage_against_the_allowance(owner, member, organization):
    organization.credit_allowance = D(1000)
    organization.save()
    spend(member, "420.5")

    html = page_html(owner, "/usage/")
    assert_shows(
        html,
        "<h1>Monitor usage</h1>",
        "June 1 to June 30, 2025 (UTC)",
        '<strong class="figure">420.5</strong> of 1,000 credits used',
        '<span class="figure">42%</span>',
        'aria-valuenow="42"',
        '<span class="badge badge-success">Within allowance</span>',
    )
    assert '<dd class="stat-value">579.5</dd>' in html  # remaining
    assert '<time datetime="2025-07-01T00:00:00+00:00">July 1, 2025, 00:00 UTC</time>' in html


def test_nearly_used_and_used_up(owner, member, organization):
    organization.credit_allowance = D(100)
    organization.save()
    spend(member, 85)

    nearly = logged_in(owner).get("/usage/").content.decode()
    spend(member, 30)
    used_up = logged_in(owner).get("/usage/").content.decode()

    assert "Nearly used" in nearly and "progress-warning" in nearly
    assert '<span class="badge badge-danger">Allowance used up</span>' in used_up
    assert "progress-danger" in used_up
    assert '<span class="figure">115%</span>' in used_up
    assert 'aria-valuenow="100"' in used_up  # the bar stops at its end
    assert '<dd class="stat-value">0</dd>' in used_up  # nothing remaining


def test_without_an_allowance_it_says_so(owner, member):
    spend(member, 42)

    html = logged_in(owner).get("/usage/").content.decode()

    assert '<span class="badge">No allowance set</span>' in html
    assert "No credit allowance is set" in html
    assert '<strong class="figure">42</strong> credits used.' in html
    assert 'aria-label="Allowance used this period"' not in html
    assert '<span class="stat-none">Not set</span>' in html


def test_the_allowance_summary_is_kept(owner, organization):
    organization.credit_allowance = D("1234.5")
    organization.save()

    html = logged_in(owner).get("/usage/").content.decode()

    assert "Credit allowance per billing period" in html
    assert '<strong class="figure">1,234.5</strong> credits' in html


# The chart


def test_chart_data_has_every_day_of_the_period(owner, member, other_organization):
    spend(member, "2.5", at=datetime(2025, 6, 2, 9, 0, tzinfo=UTC))
    spend(member, "0.5", at=datetime(2025, 6, 2, 23, 59, tzinfo=UTC))
    spend(member, 10, at=datetime(2025, 6, 15, 8, 0, tzinfo=UTC))
    spend(member, 99, at=datetime(2025, 5, 31, 23, 59, tzinfo=UTC))  # the period before
    ingest(other_organization, 55, key="x", at=NOW)

    data = chart_data(logged_in(owner).get("/usage/").content.decode())

    assert len(data["days"]) == len(data["labels"]) == len(data["used"]) == 30
    assert (data["days"][0], data["days"][-1]) == ("2025-06-01", "2025-06-30")
    assert (data["labels"][0], data["labels"][14]) == ("Jun 1", "Jun 15")
    # Days with no usage are 0 up to today; the days to come have no value yet.
    assert data["used"][:3] == ["0", "3", "0"]
    assert data["used"][14] == "10"
    assert data["used"][15:] == [None] * 15


def test_the_chart_is_drawn_by_a_static_script_with_a_fallback_table(owner, member):
    spend(member, 7, at=datetime(2025, 6, 3, 9, 0, tzinfo=UTC))

    html = logged_in(owner).get("/usage/").content.decode()

    assert '<link rel="stylesheet" href="/static/css/usage.css">' in html
    assert '<script src="/static/vendor/chart.js/chart.umd.js" defer></script>' in html
    assert '<script src="/static/js/usage_chart.js" defer></script>' in html
    assert "cdn" not in html.lower()
    # No inline script: the Content Security Policy allows only static ones.
    assert re.findall(r"<script>(.*?)</script>", html, re.S) == []
    assert re.search(
        r'<canvas id="usage-chart" role="img" data-chart-source="usage-chart-data"', html
    )
    assert 'aria-label="Bar chart of credits used per day from June 1 to June 30, 2025' in html
    # The chart's box is shown, and the table folded, by the script that draws it.
    assert_shows(
        html,
        '<div class="usage-chart" hidden>',
        '<details class="usage-chart-data" open>',
        '<time datetime="2025-06-03">Tue, Jun 3</time></th><td class="num">7</td>',
        '<time datetime="2025-06-02">Mon, Jun 2</time></th><td class="num">0</td>',
        '<th scope="row">Total</th><td class="num">7</td>',
    )


def test_the_page_reads_totals_never_the_raw_events(owner, member):
    spend(member, 5)
    client = logged_in(owner)

    with CaptureQueriesContext(connection) as queries:
        client.get("/usage/")
        client.get("/usage/export.csv")

    tables = " ".join(query["sql"] for query in queries.captured_queries)
    assert UsageEvent._meta.db_table not in tables
    assert DailyUsage._meta.db_table in tables


# Top users


def test_top_users_are_the_ten_heaviest_with_their_limits(owner, organization):
    limits_on(organization, 100, excluded_sources=["workflow"])
    members = [
        MembershipFactory(
            organization=organization,
            user__email=f"m{index:02}@acme.test",
            user__name=f"Member {index:02}",
        )
        for index in range(12)
    ]
    for index, membership in enumerate(members):
        spend(membership, 10 + index)
    spend(members[11], 200, source="workflow")  # used 221, counted 21
    custom_limit_set(organization=organization, membership=members[10], limit=D(20))
    custom_limit_set(organization=organization, membership=members[9], limit=None)

    html = logged_in(owner).get("/usage/").content.decode()

    table = html[html.index('<table class="table top-users">') :]
    table = table[: table.index("</table>")]
    names = re.findall(r'<span class="user-cell-name">(.*?)</span>', table)
    assert names == [f"Member {index:02}" for index in (11, 10, 9, 8, 7, 6, 5, 4, 3, 2)]
    assert "m11@acme.test" in table
    assert "Member 01" not in table
    assert re.search(
        r"Member 11</span>\s*<span class=\"user-cell-email\">m11@acme.test</span>\s*</th>\s*"
        r'<td class="num">221</td>\s*<td class="num">21</td>\s*<td class="num limit-cell">\s*100',
        table,
    )
    assert re.search(r'<td class="num">20</td>\s*<td class="num limit-cell">\s*20 <span', table)
    assert '<span class="badge badge-danger">Reached</span>' in table  # member 10: 20 of 20
    assert '<span class="muted">No limit</span>' in table  # member 9: unlimited
    assert "12 members used credits this period" in html
    assert '<dd class="stat-value">12</dd>' in html


def test_top_users_without_limits_and_a_user_without_a_name(owner, organization):
    nameless = MembershipFactory(
        organization=organization, user__email="nameless@acme.test", user__name=""
    )
    spend(nameless, 3)

    html = logged_in(owner).get("/usage/").content.decode()

    assert '<span class="user-cell-name">nameless@acme.test</span>' in html
    assert '<span class="muted">No limit</span>' in html
    assert "members used credits this period;" not in html


def test_no_usage_yet(owner):
    html = logged_in(owner).get("/usage/").content.decode()

    assert "No usage yet this period" in html
    assert chart_data(html)["used"][:15] == ["0"] * 15


# Usage by source


def test_usage_by_source_lists_every_source_with_its_share(owner, member, organization):
    spend(member, 30)
    spend(member, 10, source="workflow")
    spend(member, 60, source="agent_external")
    ingest(organization, 100, source="api", key="api")  # usage without a user counts too

    html = logged_in(owner).get("/usage/").content.decode()

    table = html[html.index('<table class="table sources">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(
        r'<th scope="row">(.*?)</th>\s*<td class="num">(.*?)</td>.*?'
        r'<span class="figure">(\d+)%</span>',
        table,
        re.S,
    )
    assert rows == [
        ("Assistant", "30", "15"),
        ("Agent", "0", "0"),
        ("Agent (external deployment)", "60", "30"),
        ("Workflow", "10", "5"),
        ("API", "100", "50"),
    ]


# Export CSV


def test_export_csv_columns_and_rows(owner, member, organization):
    limits_on(organization, 500, excluded_sources=["workflow"])
    colleague = MembershipFactory(
        organization=organization, user__email="colleague@acme.test", external_id="u-42"
    )
    custom_limit_set(organization=organization, membership=colleague, limit=None)
    spend(member, "12.5")
    spend(member, "0.000001", source="workflow")
    spend(colleague, 40)
    spend(owner, 1, at=datetime(2025, 5, 31, tzinfo=UTC))  # the period before

    response = logged_in(owner).get("/usage/export.csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == ('attachment; filename="usage-acme-2025-06-01.csv"')
    assert csv_rows(response) == [
        ["user", "email", "used", "counted", "limit"],
        ["u-42", "colleague@acme.test", "40", "40", ""],
        ["member@acme.test", "member@acme.test", "12.500001", "12.5", "500"],
    ]


def test_export_csv_without_limits_leaves_limit_empty(owner, member):
    spend(member, 3)

    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))

    assert rows[1] == ["member@acme.test", "member@acme.test", "3", "3", ""]


def test_export_csv_leaves_out_members_whose_usage_was_undone(owner, member, organization):
    # A consume the organization refuses undoes the member's increment and
    # leaves a row at 0: that member has no usage this period.
    organization.credit_allowance = D(5)
    organization.save()
    spend(owner, 5)
    assert not consume(organization, member, 1).allowed
    assert MemberUsage.objects.filter(membership=member, used=0).exists()

    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))
    html = logged_in(owner).get("/usage/").content.decode()

    assert [row[0] for row in rows] == ["user", "owner@acme.test"]
    assert '<dd class="stat-value">1</dd>' in html  # members with usage


def test_export_csv_defuses_spreadsheet_formulas(owner, organization):
    sneaky = MembershipFactory(
        organization=organization, user__email="sneaky@acme.test", external_id="=HYPERLINK(1)"
    )
    spend(sneaky, 1)

    rows = csv_rows(logged_in(owner).get("/usage/export.csv"))

    assert rows[1][0] == "'=HYPERLINK(1)"


def test_the_page_links_to_the_export(owner):
    html = logged_in(owner).get("/usage/").content.decode()

    assert re.search(
        r'<a class="btn btn-secondary" href="/usage/export.csv" download>.*Export CSV</a>', html
    )


# Thousands of members: a bounded number of queries


@pytest.fixture
def large_organization(organization: Organization, owner: Membership) -> Organization:
    """2,000 members, 1,500 of them with usage this period, some custom limits."""
    users = User.objects.bulk_create(
        User(email=f"user{index:04}@big.test", name=f"User {index:04}", password="!")
        for index in range(2000)
    )
    memberships = Membership.objects.bulk_create(
        Membership(
            organization=organization,
            user=user,
            role=Role.MEMBER,
            external_id=f"ext-{index:04}",
        )
        for index, user in enumerate(users)
    )
    limits_on(organization, 1000)
    CustomLimit.objects.bulk_create(
        CustomLimit(organization=organization, membership=membership, limit=D(2000))
        for membership in memberships[:50]
    )
    MemberUsage.objects.bulk_create(
        MemberUsage(
            organization=organization,
            membership=membership,
            period_start=PERIOD_START,
            used=D(index + 1),
            counted=D(index + 1),
        )
        for index, membership in enumerate(memberships[:1500])
    )
    SourceUsage.objects.bulk_create(
        SourceUsage(
            organization=organization,
            membership=membership,
            member_key=membership.pk,
            period_start=PERIOD_START,
            source="assistant",
            used=D(index + 1),
        )
        for index, membership in enumerate(memberships[:1500])
    )
    total = D(1500 * 1501 // 2)
    OrganizationUsage.objects.create(
        organization=organization, period_start=PERIOD_START, used=total
    )
    DailyUsage.objects.bulk_create(
        DailyUsage(organization=organization, day=date(2025, 6, day), used=total / 15)
        for day in range(1, 16)
    )
    return organization


def test_page_queries_are_bounded_for_thousands_of_members(
    owner, large_organization, django_assert_max_num_queries
):
    client = logged_in(owner)
    client.get("/usage/")  # the first visit stores the organization in the session

    # session, user, memberships; organization total, top users, their limit
    # rules (policy, custom limits), members with usage, by source, per day.
    with django_assert_max_num_queries(10):
        response = client.get("/usage/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "User 1499" in html  # the heaviest
    assert '<dd class="stat-value">1,500</dd>' in html
    assert "1,500 members used credits this period" in html


def test_export_queries_are_bounded_for_thousands_of_members(
    owner, large_organization, django_assert_max_num_queries
):
    client = logged_in(owner)
    client.get("/usage/")

    # session, user, memberships; the limit rules (policy, custom limits); the rows.
    with django_assert_max_num_queries(6):
        rows = csv_rows(client.get("/usage/export.csv"))

    assert len(rows) == 1501
    assert rows[1] == ["ext-1499", "user1499@big.test", "1500", "1500", "1000"]
    assert rows[-1] == ["ext-0000", "user0000@big.test", "1", "1", "2000"]


# The member's side: /me/usage/ and the blocked-action notice say until when.


def test_my_usage_names_the_periods_last_day_and_the_time_left(member):
    html = logged_in(member).get("/me/usage/").content.decode()

    assert "this billing period, June 1 to June 30, 2025 (UTC)." in html
    assert (
        'July 1, 2025, 00:00 UTC</time> <span class="muted">(in 2\xa0weeks, 1\xa0day)</span>'
        in html
    )


def test_the_blocked_notice_says_how_long_until_it_resets(organization, owner, member):
    limits_on(organization, 5)
    spend(member, 5)

    response = logged_in(member).post("/assistant/", {"prompt": "One more"})

    assert response.status_code == 402
    html = response.content.decode()
    assert (
        'July 1, 2025, 00:00 UTC</time> <span class="muted">(in 2\xa0weeks, 1\xa0day)</span>'
        in html
    )
    assert '<a href="mailto:owner@acme.test">owner@acme.test</a>' in html
