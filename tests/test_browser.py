from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.factories import MembershipFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_page(live_server, page: Page):
    page.goto(f"{live_server.url}/accounts/login/")

    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot(page, "login")


def test_admin_logs_in_and_lands_on_limits_and_alerts(live_server, page: Page, owner):
    owner.organization.credit_allowance = 5000
    owner.organization.save()

    log_in(page, live_server.url, "owner@acme.test")

    expect(page).to_have_url(f"{live_server.url}/settings/limits/")
    expect(page.get_by_role("heading", name="Limits & Alerts", level=1)).to_be_visible()
    sidebar = page.get_by_role("navigation", name="Organization Settings")
    expect(sidebar.get_by_role("heading", name="Usage")).to_be_visible()
    expect(sidebar.get_by_role("link", name="Limits & Alerts")).to_have_attribute(
        "aria-current", "page"
    )
    expect(sidebar.get_by_role("link", name="Monitor usage")).to_be_visible()
    expect(page.get_by_text("5,000")).to_be_visible()
    screenshot(page, "limits-and-alerts")

    sidebar.get_by_role("link", name="Monitor usage").click()
    expect(page.get_by_role("heading", name="Monitor usage", level=1)).to_be_visible()
    screenshot(page, "monitor-usage")


def test_bad_password_shows_an_error(live_server, page: Page, owner):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill("owner@acme.test")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("alert")).to_contain_text("do not match an account")
    screenshot(page, "login-error")


def test_member_sees_the_admins_only_page(live_server, page: Page, member):
    log_in(page, live_server.url, "member@acme.test")
    expect(page.get_by_role("heading", name="Acme Inc")).to_be_visible()

    page.goto(f"{live_server.url}/settings/limits/")

    expect(page.get_by_text("Only Admins can configure credit alerts and limits.")).to_be_visible()
    screenshot(page, "admins-only")


def test_switching_organization_with_the_switcher(
    live_server, page: Page, owner, other_organization
):
    MembershipFactory(organization=other_organization, user=owner.user)
    log_in(page, live_server.url, "owner@acme.test")
    expect(page).to_have_url(f"{live_server.url}/settings/limits/")

    page.get_by_label("Organization", exact=True).select_option(label="Globex")

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", name="Globex")).to_be_visible()
    expect(page.get_by_text("You are now working in Globex.")).to_be_visible()
    screenshot(page, "member-home")


def test_narrow_screen_collapses_the_sidebar(live_server, page: Page, owner):
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_server.url, "owner@acme.test")
    sidebar = page.get_by_role("navigation", name="Organization Settings")
    expect(sidebar).to_be_hidden()

    page.get_by_role("button", name="Menu").click()

    expect(sidebar).to_be_visible()
    screenshot(page, "limits-and-alerts-narrow")


def test_logout(live_server, page: Page, owner):
    log_in(page, live_server.url, "owner@acme.test")

    page.get_by_role("button", name="Log out").click()

    expect(page).to_have_url(f"{live_server.url}/accounts/login/")
    expect(page.get_by_text("You have been logged out.")).to_be_visible()
