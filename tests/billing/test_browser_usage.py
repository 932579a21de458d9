"""Monitor usage in a real browser: the chart draws, the CSV downloads."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from accounts.models import Membership, Organization
from alerts.services.changes import custom_limit_set
from alerts.services.ingest import UsageInput, usage_ingest
from billing.selectors import current_period
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.factories import MembershipFactory
from tests.helpers import limits_on

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The server's clock, mid-period, so the chart has three weeks to show
# whatever day the tests run. Cookies carry a Max-Age, so the browser's own
# clock does not expire the session.
MID_PERIOD = datetime(2025, 6, 22, 14, 0, tzinfo=UTC)

CHART_DATA = "Chart.getChart(document.getElementById('usage-chart')).data.datasets[0].data"


def wait_for_chart(page: Page, seconds: float = 10) -> None:
    """Until Chart.js has drawn the chart with its data. Polled from here:
    `page.wait_for_function` polls by evaluating a string in the page, which
    the page's CSP (no eval) refuses whenever the first look comes too early.
    """
    deadline = time.monotonic() + seconds
    ready = (
        "typeof Chart !== 'undefined' && !!Chart.getChart(document.getElementById('usage-chart'))"
        f" && !!({CHART_DATA}).length"
    )
    while not page.evaluate(ready):
        assert time.monotonic() < deadline, "the usage chart was not drawn"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def server_clock():
    with time_machine.travel(MID_PERIOD, tick=True):
        yield


@pytest.fixture
def usage(organization: Organization, owner: Membership, member: Membership) -> None:
    """A month under way: an allowance, a price, limits, and usage on several days."""
    organization.credit_allowance = Decimal(5000)
    organization.credit_price = Decimal("0.002")
    organization.save()
    owner.user.name = "Olivia Owner"
    owner.user.save(update_fields=["name"])
    member.user.name = "Max Member"
    member.user.save(update_fields=["name"])
    limits_on(organization, 800, excluded_sources=["workflow"])
    colleagues = [
        MembershipFactory(
            organization=organization,
            user__name=name,
            user__email=f"{name.lower().replace(' ', '.')}@acme.test",
        )
        for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing-Longname Smith")
    ]
    custom_limit_set(organization=organization, membership=colleagues[0], limit=None)
    custom_limit_set(organization=organization, membership=colleagues[1], limit=Decimal(450))
    now = timezone.now()
    start = current_period(organization).start
    sources = ["assistant", "agent", "workflow", "agent_external", "api"]
    events = []
    for index, who in enumerate([member, *colleagues, owner] * 8):
        moment = start + timedelta(days=(index * 5 + index // 4) % 22, hours=9 + index % 5)
        events.append(
            UsageInput(
                idempotency_key=f"seed-{index}",
                credits=Decimal(15 + (index * 37) % 90) + Decimal("0.5"),
                user=who.external_id,
                source=sources[(index * 3) % len(sources)],
                timestamp=min(moment, now),
            )
        )
    events.append(
        UsageInput(idempotency_key="today", credits=Decimal(120), user=member.external_id)
    )
    usage_ingest(organization=organization, events=events)


@pytest.mark.usefixtures("usage")
def test_an_admin_monitors_usage_and_exports_csv(live_server, page: Page, organization):
    page.emulate_media(reduced_motion="reduce")  # no animation: a steady screenshot
    log_in(page, live_server.url, "owner@acme.test", next_path="/usage/")

    expect(page).to_have_url(f"{live_server.url}/usage/")
    expect(page.get_by_role("heading", name="Monitor usage", level=1)).to_be_visible()
    sidebar = page.get_by_role("navigation", name="Organization Settings")
    expect(sidebar.get_by_role("link", name="Monitor usage")).to_have_attribute(
        "aria-current", "page"
    )
    expect(page.get_by_role("progressbar", name="Allowance used this period")).to_be_visible()
    expect(page.get_by_role("heading", name="Spend this period")).to_be_visible()
    chart = page.get_by_role("img", name="Bar chart of credits used per day")
    expect(chart).to_be_visible()
    wait_for_chart(page)
    drawn = page.evaluate(CHART_DATA)
    assert len(drawn) == 30  # June
    assert all(value > 0 for value in drawn[:22])
    assert drawn[21] >= 120  # today, June 22
    assert drawn[22:] == [None] * 8  # the days to come
    # Chart.js drew on the canvas: some pixels are not transparent.
    assert page.evaluate(
        """() => {
            const canvas = document.getElementById('usage-chart');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
            return pixels.data.some((value, index) => index % 4 === 3 && value > 0);
        }"""
    )
    top_users = page.get_by_role("table").filter(has_text="Counted")
    expect(top_users.get_by_role("row")).to_have_count(6)  # header and five members
    expect(page.get_by_role("row", name="Agent (external deployment)")).to_be_visible()
    page.mouse.move(0, 0)  # no row under the pointer in the screenshot
    screenshot(page, "monitor-usage-admin")

    figures = page.get_by_role("table", name="Credits used per day")
    expect(figures).to_be_hidden()
    page.get_by_text("Table of daily figures").click()
    expect(figures).to_be_visible()
    expect(figures.get_by_role("row")).to_have_count(1 + 22 + 1)  # June 1 to 22, and the total

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert download.suggested_filename == "usage-acme-2025-06-01.csv"
    with open(download.path(), newline="", encoding="utf-8") as file:
        rows = list(csv.reader(io.StringIO(file.read())))
    assert rows[0] == ["user", "email", "used", "counted", "limit"]
    by_user = {row[0]: row for row in rows[1:]}
    assert len(by_user) == 5
    member_row = by_user["member@acme.test"]
    assert member_row[1] == "member@acme.test"
    assert Decimal(member_row[2]) >= 120
    assert member_row[4] == "800"


@pytest.mark.usefixtures("usage")
def test_monitor_usage_on_a_phone(live_server, page: Page):
    page.emulate_media(reduced_motion="reduce")
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_server.url, "owner@acme.test", next_path="/usage/")

    expect(page.get_by_role("heading", name="Monitor usage", level=1)).to_be_visible()
    wait_for_chart(page)
    # Nothing wider than the screen: no sideways scrolling of the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.get_by_role("link", name="Export CSV")).to_be_visible()
    page.mouse.move(0, 0)
    screenshot(page, "monitor-usage-phone")


def test_monitor_usage_without_allowance_or_usage(live_server, page: Page, owner):
    page.emulate_media(reduced_motion="reduce")
    log_in(page, live_server.url, "owner@acme.test", next_path="/usage/")

    expect(page.get_by_text("No credit allowance is set")).to_be_visible()
    expect(page.get_by_role("heading", name="No usage yet this period")).to_be_visible()
    wait_for_chart(page)
    assert all(value in (0, None) for value in page.evaluate(CHART_DATA))
    screenshot(page, "monitor-usage-empty")


@pytest.mark.usefixtures("usage")
def test_without_javascript_the_figures_are_a_table(live_server, browser: Browser):
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 800}
    )
    page = context.new_page()
    try:
        log_in(page, live_server.url, "owner@acme.test", next_path="/usage/")

        expect(page.get_by_role("heading", name="Monitor usage", level=1)).to_be_visible()
        figures = page.get_by_role("table", name="Credits used per day")
        expect(figures).to_be_visible()
        expect(figures.get_by_role("row", name="Sun, Jun 22")).to_be_visible()
        expect(page.locator("#usage-chart")).to_be_hidden()
    finally:
        context.close()
