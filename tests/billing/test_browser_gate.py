"""The credit gate in a real browser: /assistant/ with htmx, and /me/usage/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import Membership, Organization
from billing.selectors import current_period
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.helpers import limits_on, spend

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def reset_text(organization: Organization) -> str:
    end = current_period(organization).end
    return f"{end:%B} {end.day}, {end.year}, 00:00 UTC"


@pytest.fixture
def limits(organization: Organization, owner: Membership) -> None:
    owner.user.name = "Olivia Owner"
    owner.user.save(update_fields=["name"])
    limits_on(organization, 500, admins=[owner])


@pytest.mark.usefixtures("limits")
def test_a_member_at_their_cap_sees_the_notice_in_place(
    live_server, page: Page, organization, member
):
    spend(member, 500)
    log_in(page, live_server.url, "member@acme.test")
    expect(page).to_have_url(f"{live_server.url}/me/usage/")
    page.get_by_role("navigation", name="Your account").get_by_role(
        "link", name="Assistant"
    ).click()
    expect(page.get_by_role("heading", name="Assistant", level=1)).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")

    page.get_by_label("Prompt").fill("Draft the quarterly report")
    page.get_by_role("button", name="Run assistant").click()

    notice = page.locator("#assistant-result").get_by_role("alert")
    expect(notice.get_by_role("heading", name="You've reached your credit limit")).to_be_visible()
    expect(notice).to_contain_text("You have used 500 of your 500 credit limit")
    expect(notice).to_contain_text("500 of 500 credits")
    expect(notice).to_contain_text(reset_text(organization))
    expect(notice).to_contain_text("Olivia Owner")
    expect(notice.get_by_role("link", name="owner@acme.test")).to_have_attribute(
        "href", "mailto:owner@acme.test"
    )
    # Swapped into the page, not a navigation: the form and its text are still there.
    assert page.evaluate("window.stillTheSamePage") is True
    expect(page).to_have_url(f"{live_server.url}/assistant/")
    expect(page.get_by_label("Prompt")).to_have_value("Draft the quarterly report")
    expect(page.get_by_role("button", name="Run assistant")).to_be_enabled()
    screenshot(page, "assistant-blocked")

    page.get_by_role("link", name="See my usage").click()
    expect(page.get_by_role("heading", name="My usage", level=1)).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Olivia Owner")
    screenshot(page, "my-usage-over-budget")


@pytest.mark.usefixtures("limits")
def test_a_member_with_room_sees_the_reply_and_their_usage_go_up(
    live_server, page: Page, organization, member
):
    spend(member, 100)
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")
    expect(page.get_by_text("Up to 5 credits per run")).to_be_visible()
    screenshot(page, "assistant-page")
    result = page.locator("#assistant-result")

    page.get_by_label("Prompt").fill("Summarize this week's usage")
    page.get_by_role("button", name="Run assistant").click()

    # 26 words at 0.1 credit a word, settled from the 5 held.
    expect(result.get_by_role("heading", name="Assistant reply")).to_be_visible()
    expect(result).to_contain_text("You asked: “Summarize this week's usage”")
    expect(result.locator(".assistant-reply")).to_have_text(
        "This is the demo assistant, so no model ran. A real one would answer "
        "“Summarize this week's usage” here, word by word, as this reply arrives."
    )
    expect(result).to_contain_text("Held 5 credits, charged 2.6")
    expect(result).to_contain_text("the 2.4 credits left of the hold were given back")
    expect(result.locator("dd").nth(0)).to_have_text("102.6")
    expect(result.locator("dd").nth(1)).to_have_text("500")
    expect(result.locator("dd").nth(2)).to_have_text("397.4")

    page.get_by_label("Prompt").fill("And last week's?")
    page.get_by_role("button", name="Run assistant").click()

    expect(result).to_contain_text("You asked: “And last week's?”")
    expect(result).to_contain_text("Held 5 credits, charged 2.5")
    expect(result.locator("dd").nth(0)).to_have_text("105.1")
    expect(result.locator("dd").nth(2)).to_have_text("394.9")
    screenshot(page, "assistant-reply")

    page.get_by_role("link", name="My usage", exact=True).click()
    expect(page.get_by_role("heading", name="My usage", level=1)).to_be_visible()
    expect(page.get_by_text("105.1 of 500 credits used")).to_be_visible()
    expect(page.get_by_role("progressbar", name="Your credit limit used")).to_have_attribute(
        "aria-valuenow", "21"
    )
    expect(page.get_by_text(reset_text(organization))).to_be_visible()
    screenshot(page, "my-usage")


@pytest.mark.usefixtures("limits")
def test_a_member_with_less_room_than_a_run_holds_sees_the_notice(
    live_server, page: Page, organization, member
):
    spend(member, 497)  # 3 left: a run may cost less, but it holds 5
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")

    page.get_by_label("Prompt").fill("Summarize this week's usage")
    page.get_by_role("button", name="Run assistant").click()

    notice = page.locator("#assistant-result").get_by_role("alert")
    expect(
        notice.get_by_role("heading", name="You're too close to your credit limit for this action")
    ).to_be_visible()
    expect(notice).to_contain_text("You have used 497 of your 500 credit limit")
    expect(notice).to_contain_text(
        "up to 5 credits (held while it runs; only what it uses is charged)"
    )
    expect(notice.get_by_text("Request more credits")).to_be_visible()
    screenshot(page, "assistant-blocked-by-the-hold-narrow")


@pytest.fixture
def page_without_javascript(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 800}
    )
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.mark.usefixtures("limits")
def test_without_javascript_the_reply_streams_as_a_whole_page(
    live_server, page_without_javascript: Page, organization, member
):
    spend(member, 100)
    page = page_without_javascript
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")
    page.get_by_label("Prompt").fill("Summarize this week's usage")

    with page.expect_response(re.compile(r"/assistant/$")) as answer:
        page.get_by_role("button", name="Run assistant").click()

    assert answer.value.status == 200
    # Streamed: no length known in advance (the test server then closes the connection).
    assert "content-length" not in answer.value.headers
    result = page.locator("#assistant-result")
    expect(result.get_by_role("heading", name="Assistant reply")).to_be_visible()
    expect(result).to_contain_text("as this reply arrives.")
    expect(result).to_contain_text("Held 5 credits, charged 2.6")
    expect(result.locator("dd").nth(0)).to_have_text("102.6")
    expect(page.get_by_label("Prompt")).to_have_value("Summarize this week's usage")
    screenshot(page, "assistant-reply-without-javascript")


@pytest.mark.usefixtures("limits")
def test_without_javascript_a_refusal_is_the_whole_402_page(
    live_server, page_without_javascript: Page, organization, member
):
    spend(member, 500)
    page = page_without_javascript
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")
    page.get_by_label("Prompt").fill("Draft the quarterly report")

    with page.expect_response(re.compile(r"/assistant/$")) as answer:
        page.get_by_role("button", name="Run assistant").click()

    assert answer.value.status == 402
    expect(page.get_by_role("heading", name="Action blocked", level=1)).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("You've reached your credit limit")
    expect(page.get_by_role("link", name="Go back")).to_have_attribute("href", "/assistant/")
    screenshot(page, "assistant-blocked-page")


def test_an_organization_out_of_credits_blocks_its_members(
    live_server, page: Page, organization, owner, member
):
    organization.credit_allowance = Decimal(300)
    organization.save()
    spend(owner, 298)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")

    page.get_by_label("Prompt").fill("One more question")
    page.get_by_role("button", name="Run assistant").click()

    notice = page.locator("#assistant-result").get_by_role("alert")
    expect(
        notice.get_by_role("heading", name="Your organization is out of credits")
    ).to_be_visible()
    expect(notice).to_contain_text("298 of 300 credits")
    expect(notice).to_contain_text("owner@acme.test")
    screenshot(page, "assistant-blocked-organization-narrow")
