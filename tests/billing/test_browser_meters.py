"""Meters on Monitor usage in a real browser (SPEC §10): a card per meter,
the charts of sum, count and max meters drawn, the CSV with their columns.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from playwright.sync_api import Page, expect

from accounts.models import Membership, Organization
from billing.models import Aggregation
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.factories import MeterFactory, meter_daily_row, meter_usage_row
from tests.helpers import spend

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MID_PERIOD = datetime(2025, 6, 22, 14, 0, tzinfo=UTC)
PERIOD_START = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def server_clock():
    with time_machine.travel(MID_PERIOD, tick=True):
        yield


def drawn(page: Page, canvas_id: str, seconds: float = 10) -> list[float | None]:
    """The figures Chart.js drew on the canvas, once it has (polled from here:
    the page's CSP refuses Playwright's string polling)."""
    chart = f"Chart.getChart(document.getElementById('{canvas_id}'))"
    deadline = time.monotonic() + seconds
    while not page.evaluate(f"typeof Chart !== 'undefined' && !!{chart}"):
        assert time.monotonic() < deadline, f"{canvas_id} was not drawn"
        time.sleep(0.05)
    return page.evaluate(f"{chart}.data.datasets[0].data")


@pytest.fixture
def meters(organization: Organization, owner: Membership, member: Membership) -> None:
    """Credits and three meters used this month, on several days."""
    organization.credit_allowance = Decimal(5000)
    organization.save()
    spend(member, "240.5", at=datetime(2025, 6, 3, 10, 0, tzinfo=UTC))
    spend(owner, 80, at=datetime(2025, 6, 20, 10, 0, tzinfo=UTC))
    storage = MeterFactory(key="storage_gb", name="Storage", unit="GB", aggregation="max")
    meetings = MeterFactory(
        key="meetings", name="Meetings", unit="meetings", aggregation=Aggregation.COUNT
    )
    users = MeterFactory(
        key="active_users",
        name="Active users",
        unit="users",
        aggregation=Aggregation.UNIQUE_COUNT,
        property="user_id",
    )
    meter_usage_row(storage, organization, "48.75", period_start=PERIOD_START)
    meter_usage_row(storage, organization, "48.75", period_start=PERIOD_START, membership=member)
    meter_usage_row(meetings, organization, 37, period_start=PERIOD_START)
    meter_usage_row(meetings, organization, 30, period_start=PERIOD_START, membership=owner)
    meter_usage_row(meetings, organization, 7, period_start=PERIOD_START, membership=member)
    meter_usage_row(users, organization, 2, period_start=PERIOD_START)
    for day in range(1, 23):
        meter_daily_row(
            storage, organization, date(2025, 6, day), Decimal("12.5") + day * Decimal("1.5")
        )
        if day % 3 == 0:
            meter_daily_row(meetings, organization, date(2025, 6, day), day // 3 + 1)
    meter_daily_row(meetings, organization, date(2025, 6, 22), 2)  # 37 in all


@pytest.mark.usefixtures("meters")
def test_an_admin_sees_a_card_per_meter_and_their_charts(live_server, page: Page):
    page.emulate_media(reduced_motion="reduce")
    log_in(page, live_server.url, "owner@acme.test", next_path="/usage/")

    expect(page.get_by_role("heading", name="Monitor usage", level=1)).to_be_visible()
    storage = page.get_by_role("region", name="Storage")
    expect(storage).to_contain_text("Largest quantity reported this period, in GB.")
    expect(storage.locator(".meter-value")).to_have_text("48.75 GB")
    meetings = page.get_by_role("region", name="Meetings")
    expect(meetings.locator(".meter-value")).to_have_text("37 meetings")
    users = page.get_by_role("region", name="Active users")
    expect(users.locator(".meter-value")).to_have_text("2 users")
    expect(users).to_contain_text("no chart per day")
    expect(users.get_by_role("img")).to_have_count(0)

    storage_days = drawn(page, "meter-chart-storage_gb")
    meeting_days = drawn(page, "meter-chart-meetings")
    assert storage_days[:2] == [14, 15.5]
    assert storage_days[22:] == [None] * 8  # the days to come
    assert meeting_days[2] == 2 and meeting_days[3] == 0
    assert drawn(page, "usage-chart")[2] == 240.5  # the credits' chart, drawn too
    expect(storage.get_by_role("img", name="Bar chart of Storage")).to_be_visible()
    page.mouse.move(0, 0)
    screenshot(page, "monitor-usage-meters")
    # The table of figures is folded once the chart is drawn, and still there.
    figures = meetings.get_by_role("table", name="Meetings, events per day")
    expect(figures).to_be_hidden()
    meetings.get_by_text("Table of daily figures").click()
    expect(figures.get_by_role("row", name="Total")).to_contain_text("37")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    with open(download_info.value.path(), newline="", encoding="utf-8") as file:
        rows = list(csv.reader(io.StringIO(file.read())))
    assert rows[0] == [
        *("user", "email", "used", "counted", "limit"),
        *("active_users", "meetings", "storage_gb"),
    ]
    by_user = {row[0]: row[5:] for row in rows[1:]}
    assert by_user == {"member@acme.test": ["0", "7", "48.75"], "owner@acme.test": ["0", "30", "0"]}


@pytest.mark.usefixtures("meters")
def test_meter_cards_on_a_phone(live_server, page: Page):
    page.emulate_media(reduced_motion="reduce")
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_server.url, "owner@acme.test", next_path="/usage/")

    drawn(page, "meter-chart-meetings")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.mouse.move(0, 0)
    screenshot(page, "monitor-usage-meters-phone")
