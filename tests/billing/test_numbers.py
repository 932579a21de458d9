"""Numbers people can read: thousands grouped on the pages (never in the CSV
or the API), a share below 1% written "<1%", and a sidebar titled for its
reader.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.template import Context, Template

from tests.fixtures import logged_in
from tests.helpers import spend

pytestmark = pytest.mark.django_db

D = Decimal


def render(template: str, **context) -> str:
    return Template("{% load credits %}" + template).render(Context(context))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (D("12500"), "12,500"),
        (D("1234.5"), "1,234.5"),
        (D("1234567.000001"), "1,234,567.000001"),  # every decimal kept
        (D("999"), "999"),
        (D("0.000001"), "0.000001"),
        (D("1E+6"), "1,000,000"),
        ("12500.250000", "12,500.25"),
        (None, "—"),
    ],
)
def test_credits_group_their_thousands_and_keep_their_decimals(value, shown):
    assert render("{{ value|credits }}", value=value) == shown


@pytest.mark.parametrize(
    ("percent", "part", "shown"),
    [
        (0, D("0.5"), "&lt;1%"),  # escaped, as the page writes it
        (0, D(0), "0%"),
        (1, D(1), "1%"),
        (100, D(5), "100%"),
        (None, 1, "—"),
    ],
)
def test_a_share_below_one_percent_is_less_than_one(percent, part, shown):
    assert render("{{ percent|share:part }}", percent=percent, part=part) == shown


@pytest.fixture
def heavy_usage(organization, owner, member):
    organization.credit_allowance = D(10_000_000)
    organization.save()
    spend(member, 12500)
    spend(owner, "1234.5", source="workflow")
    spend(owner, 50, source="agent_external")  # 0.36% of all usage
    return organization


def test_the_usage_page_groups_every_figure(owner, heavy_usage):
    html = logged_in(owner).get("/usage/").content.decode()

    assert '<dd class="stat-value">13,784.5</dd>' in html  # used
    assert '<dd class="stat-value">10,000,000</dd>' in html  # allowance
    assert '<dd class="stat-value">9,986,215.5</dd>' in html  # remaining
    assert '<td class="num">12,500</td>' in html  # a top user, and a source
    assert '<td class="num">1,234.5</td>' in html
    assert '<strong class="figure">10,000,000</strong> credits' in html  # the summary
    assert "12500" not in html.replace('"12500"', "")  # the chart's data is plain JSON


def test_a_share_below_one_percent_on_the_usage_page(owner, heavy_usage):
    html = logged_in(owner).get("/usage/").content.decode()

    # 13,784.5 of an allowance of 10,000,000 is 0.1%: used, so not "0%".
    assert '<span class="figure">&lt;1%</span>' in html
    assert "(&lt;1%)" in html  # the meter's spoken value
    # By source: agents 50 of 13,784.5 credits is under 1%; a source not used is 0%.
    shares = html.split('id="sources-title"')[1]
    assert shares.count('<span class="figure">&lt;1%</span>') == 1
    assert '<span class="figure">90%</span>' in shares  # assistant
    assert '<span class="figure">8%</span>' in shares  # workflows
    assert '<span class="figure">0%</span>' in shares  # unused sources


def test_the_csv_and_the_api_keep_plain_numbers(owner, heavy_usage, api):
    export = logged_in(owner).get("/usage/export.csv")
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert [rows[1][1], rows[1][2]] == ["member@acme.test", "12500"]

    summary = api.get("/api/v1/usage/summary").json()
    assert summary["used"] == "13784.5"


def test_a_members_sidebar_is_titled_for_them(member, owner):
    member_html = logged_in(member).get("/me/usage/").content.decode()
    admin_html = logged_in(owner).get("/me/usage/").content.decode()

    assert '<h2 class="sidebar-title" id="sidebar-title">Your account</h2>' in member_html
    assert "Organization Settings" not in member_html
    assert '<h2 class="sidebar-title" id="sidebar-title">Organization Settings</h2>' in admin_html
