"""The Members and API Keys pages in headless Chromium: an admin creates an
API key and sees it once, revokes it; searches the members, changes a
member's role, is refused stepping down as the only admin, and removes a
member. Each step saves a screenshot under test-artifacts/screenshots/.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import ApiKey, Membership, Role
from accounts.services import api_key_authenticate
from tests.browser import (  # noqa: F401
    browser_fixture,
    open_settings_page,
    page_fixture,
    screenshot,
    watch_csp,
)
from tests.factories import MembershipFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_creates_an_api_key_sees_it_once_and_revokes_it(live_server, page: Page, owner):
    csp_violations = watch_csp(page)
    open_settings_page(page, live_server.url, "API Keys", "/settings/api-keys/")
    expect(page.get_by_text("No API keys yet")).to_be_visible()

    # No name: refused in place, nothing stored.
    create = page.locator("#api-key-create")
    create.get_by_role("button", name="Create API key").click()
    expect(create.get_by_text("This field is required.")).to_be_visible()
    expect(create.get_by_label("Name")).to_be_focused()
    assert not ApiKey.objects.exists()

    create.get_by_label("Name").fill("Production app")
    create.get_by_role("button", name="Create API key").click()

    expect(page.get_by_role("status")).to_contain_text("API key “Production app” created.")
    shown = page.get_by_label("New API key")
    expect(shown).to_be_visible()
    raw_key = shown.input_value()
    api_key = ApiKey.objects.get()
    authenticated = api_key_authenticate(raw_key=raw_key)
    assert authenticated is not None and authenticated.pk == api_key.pk
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    row = page.locator(f"#api-key-{api_key.pk}")
    expect(row).to_contain_text("Production app")
    expect(row).to_contain_text(f"{api_key.prefix}…")
    expect(row).to_contain_text("Active")
    expect(row).to_contain_text("Never")
    expect(create.get_by_label("Name")).to_have_value("")  # ready for another key
    screenshot(page, "api-keys-created-shown-once")

    # Shown once: a reload no longer has it.
    page.reload()
    expect(page.get_by_label("New API key")).to_have_count(0)
    assert raw_key not in page.content()

    row.get_by_role("link", name="Revoke Production app").click()
    dialog = page.get_by_role("dialog", name="Revoke API key")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Revoke the API key “Production app” ({api_key.prefix}…)?")
    screenshot(page, "api-keys-revoke-dialog")
    dialog.get_by_role("button", name="Revoke").click()

    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status")).to_contain_text("revoked.")
    expect(row).to_contain_text("Revoked")
    expect(row.get_by_role("link", name="Revoke Production app")).to_have_count(0)
    screenshot(page, "api-keys-revoked")
    assert api_key_authenticate(raw_key=raw_key) is None
    assert csp_violations == []


def test_admin_searches_changes_a_role_and_removes_a_member(live_server, page: Page, owner, member):
    csp_violations = watch_csp(page)
    organization = owner.organization
    owner.user.name = "Olivia Owner"
    owner.user.save()
    grace = MembershipFactory(
        organization=organization, user__name="Grace Hopper", user__email="grace@acme.test"
    )
    for i in range(30):
        MembershipFactory(organization=organization, user__name=f"Team member {i:02}")
    open_settings_page(page, live_server.url, "Members", "/settings/members/")
    rows = page.locator("#member-list tbody tr")
    expect(rows).to_have_count(25)
    expect(page.locator("#member-list")).to_contain_text("Page 1 of 2 · 33 in all")
    screenshot(page, "members-list")

    # Search as you type: the list narrows, the URL keeps the search.
    page.get_by_label("Search members").fill("grace")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Grace Hopper")
    expect(rows.first).to_contain_text("grace@acme.test")
    expect(page).to_have_url(f"{live_server.url}/settings/members/?q=grace")
    screenshot(page, "members-search")

    # Make Grace an admin: saved as soon as the select changes.
    page.get_by_label("Role of Grace Hopper").select_option("admin")
    expect(page.get_by_role("status")).to_contain_text("Grace Hopper is now an Admin.")
    assert Membership.objects.get(pk=grace.pk).role == Role.ADMIN
    Membership.objects.filter(pk=grace.pk).update(role=Role.MEMBER)

    # The only admin cannot step down: refused beside the select, which goes back.
    page.get_by_label("Search members").fill("olivia")
    expect(rows).to_have_count(1)
    page.get_by_label("Role of Olivia Owner").select_option("member")
    expect(page.get_by_role("alert")).to_contain_text(
        "You are the only admin of Acme Inc: make another member an admin before you step down."
    )
    expect(page.get_by_label("Role of Olivia Owner")).to_have_value("admin")
    screenshot(page, "members-last-admin-refused")
    assert Membership.objects.get(pk=owner.pk).role == Role.ADMIN

    # Remove Grace, after confirming.
    page.get_by_label("Search members").fill("grace")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("link", name="Remove Grace Hopper").click()
    dialog = page.get_by_role("dialog", name="Remove member")
    expect(dialog).to_contain_text("Remove Grace Hopper (grace@acme.test) from Acme Inc?")
    screenshot(page, "members-remove-dialog")
    dialog.get_by_role("button", name="Remove").click()

    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status")).to_contain_text("Grace Hopper was removed.")
    expect(page.get_by_text("No members match “grace”")).to_be_visible()
    assert not Membership.objects.filter(pk=grace.pk).exists()

    # Clearing the search brings back everyone left.
    page.get_by_label("Search members").fill("")
    expect(page.locator("#member-list")).to_contain_text("32 in all")
    screenshot(page, "members-after-removal")
    assert csp_violations == []
