"""The Manage credits page (/credits/): the balance, the grants and their
ledger, balance alerts added, edited and deleted, the auto top-up saved;
refusals shown on the form with nothing stored; roles and tenancy; a query
count that does not grow with the grants. And the member's side: the
organization's balance on /me/usage/, the blocked notice when it is used up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Organization
from alerts.models import BalanceAlert
from alerts.services.credit_settings import (
    AutoTopUpInput,
    auto_top_up_set,
    balance_alert_create,
)
from alerts.services.credits import credit_grant_void
from billing.models import AutoTopUp, CreditGrant
from tests.factories import AdminMembershipFactory
from tests.fixtures import logged_in
from tests.helpers import assert_shows, clock_held_at, consume, form_data, page_html, spend
from tests.helpers import credit_grant as grant

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2025, 6, 15, 12, 30, tzinfo=UTC)
frozen_time = clock_held_at(NOW)

HTMX = {"HX-Request": "true"}
PAGE = "/credits/"
ADD = "/credits/balance-alerts/new/"
TOP_UP = "/credits/auto-top-up/"


def alert_form(**fields) -> dict:
    return form_data("balance_alert", **{"type": "depleted", "notify": "all_admins", **fields})


def top_up_form(**fields) -> dict:
    return form_data(
        "top_up",
        **{
            "enabled": "on",
            "threshold": "100",
            "credits": "500",
            "priority": "50",
            "expires_after_days": "",
            "max_per_period": "3",
            **fields,
        },
    )


def section(html: str, section_id: str) -> str:
    """The HTML of the section whose root element has `section_id`."""
    return html.split(f'id="{section_id}"')[1].split("</section>")[0]


# The page


def test_the_page_has_its_sections_and_labels(owner, organization):
    organization.credit_allowance = D(1000)
    organization.save()

    html = page_html(owner, PAGE)

    assert_shows(
        html,
        "<h1>Manage credits</h1>",
        "Credit balance",
        "Allowance left this period",
        "Grants remaining",
        "Overage this period",
        "Grants",
        "cannot be added on this page",
        "Recent ledger entries",
        "Balance Alerts",
        "Add balance alert",
        "Auto Top-Up",
        '<label for="id_top_up-enabled">Auto Top-Up</label>',
        '<label for="id_top_up-threshold">Top up when the balance falls below</label>',
        '<label for="id_top_up-credits">Top up by</label>',
        '<label for="id_top_up-priority">Priority</label>',
        '<label for="id_top_up-expires_after_days">Expires after (days)</label>',
        '<label for="id_top_up-max_per_period">Most top-ups per billing period</label>',
        ">Save</button>",
        "<strong>0</strong> of 3 top-ups made this billing period",
    )
    # No way for an admin to add or void a grant here.
    assert "/api/v1/credit-grants" not in html and "Void" not in html


def test_the_sidebar_links_to_the_page_under_usage_for_admins_only(owner, member):
    html = page_html(owner, "/settings/limits/")
    usage_nav = html.split('id="nav-usage"')[1].split("</ul>")[0]
    assert '<a href="/credits/">Manage credits</a>' in usage_nav
    assert usage_nav.index("Monitor usage") < usage_nav.index("Manage credits")
    assert 'href="/credits/" aria-current="page"' in page_html(owner, PAGE)
    assert 'href="/credits/"' not in page_html(member, "/me/usage/")


def test_the_balance_with_an_allowance_and_grants(owner, member, organization):
    organization.credit_allowance = D(1000)
    organization.block_when_exhausted = True
    organization.save()
    grant(organization, 500)
    spend(member, 1200)  # the whole allowance and 200 of the grant

    html = section(page_html(owner, PAGE), "credit-balance")

    assert '<p class="balance-figure"><strong>300</strong>' in html
    assert '0 <span class="stat-unit">of 1,000</span>' in html
    assert "Jun 1 \u2013 Jun 30, 2025" in html
    assert '300 <span class="stat-unit">credits</span>' in html  # grants remaining
    assert "in 1 active grant" in html
    assert "refused when they would cost more than the balance" in html


def test_overage_when_nothing_covers_the_usage(owner, member, organization):
    organization.credit_allowance = D(100)
    organization.save()
    spend(member, 130)

    html = section(page_html(owner, PAGE), "credit-balance")

    assert "<strong>0</strong>" in html
    assert '30 <span class="stat-unit">credits</span>' in html.split("Overage this period")[1]
    assert "Used up" in html


def test_no_balance_is_explained(owner):
    html = section(page_html(owner, PAGE), "credit-balance")

    assert "No balance" in html
    assert "has no credit allowance and has never had a credit grant" in html
    assert "No allowance set" in html


def test_grants_newest_first_with_their_status(owner, member, organization):
    used_up = grant(organization, 50, note="welcome credits", kind="promotional")
    spend(member, 50)
    voided = grant(organization, 70, kind="adjustment")
    credit_grant_void(organization=organization, grant_id=voided.pk)
    pending = grant(organization, 80, effective_at=NOW + timedelta(days=2))
    expiring = grant(organization, 90, expires_at=NOW + timedelta(days=10))
    CreditGrant.objects.filter(pk=used_up.pk).update(created_at=NOW - timedelta(days=3))
    CreditGrant.objects.filter(pk=voided.pk).update(created_at=NOW - timedelta(days=2))
    CreditGrant.objects.filter(pk=pending.pk).update(created_at=NOW - timedelta(days=1))

    html = page_html(owner, PAGE)

    def row(g: CreditGrant) -> str:
        return html.split(f'id="credit-grant-{g.pk}"')[1].split("</tr>")[0]

    assert "Promotional" in row(used_up) and "welcome credits" in row(used_up)
    assert "Depleted" in row(used_up) and ">0<" in row(used_up)
    assert "Voided" in row(voided)
    assert "Pending" in row(pending) and "from Jun 17" in row(pending)
    assert "Active" in row(expiring) and "Jun 25, 2025 12:30 UTC" in row(expiring)
    assert "Never" in row(pending)
    order = [html.index(f'id="credit-grant-{g.pk}"') for g in (expiring, pending, voided, used_up)]
    assert order == sorted(order)


def test_grants_are_paginated_and_a_page_comes_alone_for_htmx(owner, organization):
    for n in range(27):
        grant(organization, n + 1)
    client = logged_in(owner)

    first = client.get(PAGE).content.decode()
    assert section(first, "credit-grants").count('id="credit-grant-') == 25
    assert "Page 1 of 2 · 27 in all" in first

    second = client.get(
        f"{PAGE}?grants_page=2", headers=HTMX | {"HX-Target": "credit-grants"}
    ).content.decode()
    assert second.count('id="credit-grant-') == 2
    assert "<h1>" not in second and 'id="credit-grants"' in second


def test_recent_ledger_entries_signed_newest_first(owner, member, organization):
    purchased = grant(organization, 1000)
    spend(member, 40)

    html = section(page_html(owner, PAGE), "credit-ledger")

    rows = html.split('id="credit-entry-')[1:]
    assert len(rows) == 2
    assert "Drawdown" in rows[0] and "\u221240" in rows[0]  # a minus sign
    assert "Grant" in rows[1] and "+1,000" in rows[1]
    assert f'Purchased grant <span class="muted">#{purchased.pk}</span>' in rows[1]


def test_only_the_latest_20_ledger_entries(owner, member, organization):
    grant(organization, 1000)
    for _ in range(25):
        spend(member, 1)

    html = section(page_html(owner, PAGE), "credit-ledger")

    assert html.count('id="credit-entry-') == 20
    assert "Grant</td>" not in html  # the oldest entry, the grant's, is past the 20


# Balance alerts


def test_add_form_has_the_three_types_and_the_recipients(owner):
    html = logged_in(owner).get(ADD, headers=HTMX).content.decode()

    for index, label in enumerate(("Depleted", "Dropped below", "Recovered")):
        assert f'<label for="id_balance_alert-type_{index}"><input type="radio"' in html
        assert f"{label}</label>" in html
    assert 'data-show-if="balance_alert-type=dropped"' in html
    assert '<label for="id_balance_alert-threshold">Threshold</label>' in html
    assert "All Admins" in html and "Specific Admins" in html
    assert ">Add</button>" in html


def test_add_a_dropped_below_alert(owner, organization):
    response = logged_in(owner).post(ADD, alert_form(type="dropped", threshold="500"), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert "closeDialog" in response["HX-Trigger"]
    alert = BalanceAlert.objects.get(organization=organization)
    assert (alert.type, alert.threshold, alert.notify) == ("dropped", D(500), "all_admins")
    html = response.content.decode()
    assert "Balance alert added." in html
    row = html.split(f'id="balance-alert-{alert.pk}"')[1].split("</tr>")[0]
    assert "Dropped below" in row and "500" in row and "All Admins" in row and "Armed" in row


def test_a_threshold_left_in_the_hidden_field_is_not_asked_of_other_types(owner, organization):
    response = logged_in(owner).post(
        ADD, alert_form(type="recovered", threshold="oops"), headers=HTMX
    )

    assert response.status_code == 200
    alert = BalanceAlert.objects.get(organization=organization)
    assert (alert.type, alert.threshold) == ("recovered", None)


def test_add_for_specific_admins(owner, organization):
    cfo = AdminMembershipFactory(organization=organization, user__email="cfo@acme.test")

    response = logged_in(owner).post(
        ADD, alert_form(notify="specific_admins", admins=[cfo.pk]), headers=HTMX
    )

    assert response.status_code == 200
    alert = BalanceAlert.objects.get(organization=organization)
    assert list(alert.admins.all()) == [cfo]
    assert cfo.display_name in response.content.decode()


@pytest.mark.parametrize(
    ("fields", "message", "field"),
    [
        ({"type": "dropped", "threshold": ""}, "needs a threshold greater than 0", "threshold"),
        ({"type": "dropped", "threshold": "-5"}, "", "threshold"),
        ({"type": "dropped", "threshold": "abc"}, "", "threshold"),
        ({"type": "sometimes"}, "Select a valid choice.", "type"),
        ({"notify": "specific_admins"}, "Choose at least one admin to notify", "admins"),
    ],
    ids=["no-threshold", "negative", "not-a-number", "bad-type", "no-admins"],
)
def test_bad_input_keeps_the_form_with_the_error_and_stores_nothing(
    owner, organization, fields, message, field
):
    response = logged_in(owner).post(ADD, alert_form(**fields), headers=HTMX)

    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    assert f'id="id_balance_alert-{field}_error"' in html
    assert 'class="dialog-form"' in html
    assert not BalanceAlert.objects.exists()


def test_an_admin_of_another_organization_is_refused_as_a_recipient(owner, outsider):
    response = logged_in(owner).post(
        ADD, alert_form(notify="specific_admins", admins=[outsider.pk]), headers=HTMX
    )

    assert response.status_code == 422
    assert not BalanceAlert.objects.exists()


def test_the_tenth_alert_is_the_last(owner, organization):
    for n in range(10):
        balance_alert_create(organization=organization, alert_type="dropped", threshold=D(n + 1))
    client = logged_in(owner)

    assert "10 balance alerts at most" in client.get(PAGE).content.decode()
    response = client.post(ADD, alert_form(), headers=HTMX)

    assert response.status_code == 422
    assert "at most 10 balance alerts" in response.content.decode()
    assert BalanceAlert.objects.count() == 10


def test_edit_an_alert(owner, organization):
    alert = balance_alert_create(organization=organization, alert_type="recovered")
    client = logged_in(owner)
    url = f"/credits/balance-alerts/{alert.pk}/"

    form = client.get(url, headers=HTMX).content.decode()
    assert "Edit balance alert" in form and ">Save</button>" in form
    # The form opens on the alert as saved, not on the default type.
    assert 'value="recovered" required id="id_balance_alert-type_2" checked>' in form
    assert 'value="depleted" required id="id_balance_alert-type_0">' in form

    response = client.post(url, alert_form(type="dropped", threshold="250"), headers=HTMX)

    assert response.status_code == 200
    assert "Balance alert saved." in response.content.decode()
    alert.refresh_from_db()
    assert (alert.type, alert.threshold) == ("dropped", D(250))


def test_a_bad_edit_changes_nothing(owner, organization):
    alert = balance_alert_create(organization=organization, alert_type="dropped", threshold=D(9))

    response = logged_in(owner).post(
        f"/credits/balance-alerts/{alert.pk}/",
        alert_form(type="dropped", threshold="0"),
        headers=HTMX,
    )

    assert response.status_code == 422
    alert.refresh_from_db()
    assert alert.threshold == D(9)


def test_delete_an_alert_after_asking(owner, organization):
    alert = balance_alert_create(organization=organization, alert_type="dropped", threshold=D(75))
    client = logged_in(owner)
    url = f"/credits/balance-alerts/{alert.pk}/delete/"

    question = client.get(url, headers=HTMX).content.decode()
    assert "Delete the alert on the balance dropped below 75 credits?" in question
    assert BalanceAlert.objects.exists()

    response = client.post(url, headers=HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Balance alert deleted." in html and "No balance alerts yet" in html
    assert not BalanceAlert.objects.exists()


def test_balance_alerts_without_javascript(owner, organization):
    client = logged_in(owner)

    page = client.get(ADD)
    assert page.status_code == 200 and "<html" in page.content.decode()
    assert 'href="/credits/" data-dialog-close>Cancel' in page.content.decode()
    bad = client.post(ADD, alert_form(type="dropped"))
    assert bad.status_code == 422 and "<html" in bad.content.decode()
    response = client.post(ADD, alert_form(), follow=True)

    assert response.redirect_chain == [(PAGE, 302)]
    assert "Balance alert added." in response.content.decode()
    assert BalanceAlert.objects.count() == 1


def test_the_status_shows_an_alert_in_alarm(owner, member, organization):
    grant(organization, 10)
    spend(member, 10)
    alert = balance_alert_create(organization=organization, alert_type="depleted")
    assert alert.status == "in_alarm"  # the balance is already 0

    html = section(page_html(owner, PAGE), "balance-alerts")

    assert "In alarm" in html.split(f'id="balance-alert-{alert.pk}"')[1]


# Auto top-up


def test_save_auto_top_up(owner, organization):
    response = logged_in(owner).post(
        TOP_UP,
        top_up_form(priority="10", expires_after_days="30", max_per_period="5"),
        headers=HTMX,
    )

    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    html = response.content.decode()
    assert "Auto Top-Up saved." in html
    assert 'id="auto-top-up"' in html and "hx-swap-oob" in html
    assert "<strong>0</strong> of 5 top-ups made this billing period" in html
    top_up = AutoTopUp.objects.get(organization=organization)
    assert (top_up.enabled, top_up.threshold, top_up.credits) == (True, D(100), D(500))
    assert (top_up.priority, top_up.expires_after_days, top_up.max_per_period) == (10, 30, 5)
    # Shown as saved when the page is opened again.
    again = section(page_html(owner, PAGE), "auto-top-up")
    assert 'value="100"' in again and 'value="500"' in again and "checked" in again


def test_turning_auto_top_up_off_keeps_its_settings(owner, organization):
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(enabled=True, threshold=D(10), credits=D(20)),
    )

    response = logged_in(owner).post(TOP_UP, top_up_form(enabled=""), headers=HTMX)

    assert response.status_code == 200
    top_up = AutoTopUp.objects.get(organization=organization)
    assert not top_up.enabled and top_up.threshold == D(100)


@pytest.mark.parametrize(
    ("fields", "message", "field"),
    [
        ({"threshold": ""}, "Say below which balance to top up.", "threshold"),
        ({"credits": ""}, "Say how many credits to top up by.", "credits"),
        ({"credits": "-1"}, "", "credits"),
        ({"priority": "101"}, "less than or equal to 100", "priority"),
        ({"expires_after_days": "0"}, "greater than or equal to 1", "expires_after_days"),
        ({"max_per_period": "x"}, "Enter a whole number.", "max_per_period"),
    ],
    ids=["no-threshold", "no-credits", "negative", "priority", "expiry", "max"],
)
def test_bad_auto_top_up_keeps_the_form_with_the_error_and_stores_nothing(
    owner, fields, message, field
):
    response = logged_in(owner).post(TOP_UP, top_up_form(**fields), headers=HTMX)

    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    assert f'id="id_top_up-{field}_error"' in html
    assert html.lstrip().startswith('<section class="card" id="auto-top-up"')
    if field in ("priority", "expires_after_days", "max_per_period"):
        assert '<details class="more-settings" open>' in html  # the error is not hidden
    assert not AutoTopUp.objects.exists()


def test_bad_auto_top_up_without_javascript_is_the_page_with_the_error(owner):
    response = logged_in(owner).post(TOP_UP, top_up_form(threshold=""))

    assert response.status_code == 422
    html = response.content.decode()
    assert "<h1>Manage credits</h1>" in html and "Say below which balance to top up." in html
    assert not AutoTopUp.objects.exists()


def test_top_ups_made_this_period_are_shown(owner, member, organization):
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(enabled=True, threshold=D(50), credits=D(100), max_per_period=2),
    )
    grant(organization, 60)
    spend(member, 20)  # 60 -> 40: below 50, a top-up of 100

    html = section(page_html(owner, PAGE), "auto-top-up")

    assert "<strong>1</strong> of 2 top-ups made this billing period" in html
    assert CreditGrant.objects.filter(kind="top_up").count() == 1


def test_top_ups_of_a_past_period_are_not_counted_in_this_one(owner, organization):
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(enabled=True, threshold=D(50), credits=D(100)),
    )
    AutoTopUp.objects.filter(organization=organization).update(
        top_ups=3, period_start=datetime(2025, 5, 1, tzinfo=UTC)
    )

    html = section(page_html(owner, PAGE), "auto-top-up")

    assert "<strong>0</strong> of 3 top-ups made this billing period" in html
    assert "no more this period" not in html


# Roles, tenancy, queries


def test_members_get_403_and_change_nothing(member, organization):
    alert = balance_alert_create(organization=organization, alert_type="depleted")
    client = logged_in(member)

    for method, path, data in (
        ("get", PAGE, None),
        ("get", ADD, None),
        ("post", ADD, alert_form(type="recovered")),
        ("get", f"/credits/balance-alerts/{alert.pk}/", None),
        ("post", f"/credits/balance-alerts/{alert.pk}/", alert_form(type="recovered")),
        ("get", f"/credits/balance-alerts/{alert.pk}/delete/", None),
        ("post", f"/credits/balance-alerts/{alert.pk}/delete/", None),
        ("post", TOP_UP, top_up_form()),
    ):
        response = getattr(client, method)(path, data)
        assert response.status_code == 403, (method, path)
    alert.refresh_from_db()
    assert alert.type == "depleted"
    assert BalanceAlert.objects.count() == 1 and not AutoTopUp.objects.exists()


def test_anonymous_visitors_are_sent_to_log_in(db):
    from django.test import Client

    response = Client().get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/credits/"


def test_another_organizations_admin_gets_404_on_this_organizations_alerts(outsider, organization):
    alert = balance_alert_create(organization=organization, alert_type="dropped", threshold=D(5))
    grant(organization, 12345)
    client = logged_in(outsider)

    for method, path in (
        ("get", f"/credits/balance-alerts/{alert.pk}/"),
        ("post", f"/credits/balance-alerts/{alert.pk}/"),
        ("get", f"/credits/balance-alerts/{alert.pk}/delete/"),
        ("post", f"/credits/balance-alerts/{alert.pk}/delete/"),
    ):
        response = getattr(client, method)(path, alert_form(type="recovered"))
        assert response.status_code == 404, (method, path)
    html = client.get(PAGE).content.decode()
    assert "12,345" not in html and f'id="balance-alert-{alert.pk}"' not in html
    alert.refresh_from_db()
    assert (alert.type, alert.threshold) == ("dropped", D(5))


def test_the_page_costs_the_same_with_1_or_5_grants_and_alerts(owner, member, organization):
    organization.credit_allowance = D(10)
    organization.save()
    cfo = AdminMembershipFactory(organization=organization)
    client = logged_in(owner)

    def add_one(n: int) -> None:
        grant(organization, 100 + n)
        spend(member, 1)
        balance_alert_create(
            organization=organization,
            alert_type="dropped",
            threshold=D(n + 1),
            notify="specific_admins",
            admins=[owner, cfo],
        )

    add_one(0)
    client.get(PAGE)  # session and first-visit writes out of the way
    with CaptureQueriesContext(connection) as one:
        client.get(PAGE)
    for n in range(1, 5):
        add_one(n)

    with CaptureQueriesContext(connection) as five:
        html = client.get(PAGE).content.decode()

    assert section(html, "credit-grants").count('id="credit-grant-') == 5
    assert len(five) == len(one), [q["sql"] for q in five]
    assert len(five) <= 20, [q["sql"] for q in five]


# The member's side


def blocking_with_grants(organization: Organization, owner: Membership) -> None:
    """Acme blocks when its balance is used up: 100 allowance, a grant of 50, 148 used."""
    organization.credit_allowance = D(100)
    organization.block_when_exhausted = True
    organization.save()
    grant(organization, 50)
    spend(owner, 148)


def test_my_usage_shows_the_organizations_balance_when_it_limits_the_member(
    owner, member, organization
):
    blocking_with_grants(organization, owner)

    html = page_html(member, "/me/usage/")

    balance = section(html, "organization-balance")
    assert "Acme Inc credit balance" in balance
    assert '<strong class="figure">2</strong> credits' in balance
    assert "0 left of this period's allowance" in balance and "2 in credit grants" in balance
    assert "refused once an action would cost more than the balance" in balance


def test_my_usage_shows_no_balance_when_the_organization_does_not_block(
    owner, member, organization
):
    blocking_with_grants(organization, owner)
    organization.block_when_exhausted = False
    organization.save()

    assert 'id="organization-balance"' not in page_html(member, "/me/usage/")


def test_the_notice_says_the_balance_is_used_up_and_whom_to_ask(owner, member, organization):
    blocking_with_grants(organization, owner)
    consume(organization, owner, 2)  # the last 2

    response = logged_in(member).post("/assistant/", {"prompt": "Hello"})

    assert response.status_code == 402
    notice = response.content.decode()
    assert_shows(
        notice,
        "Your organization's credit balance is used up",
        "Organization credit balance",
        '<strong class="figure">0</strong> credits left',
        "come back with the next period's allowance on",
        "July 1, 2025",
        "or sooner when credits are added",
        "mailto:owner@acme.test",
    )
    assert "Credits reset" not in notice and "(the organization's allowance)" not in notice
    assert "used up" in page_html(member, "/me/usage/")


def test_the_notice_when_the_balance_is_too_low_for_the_action(owner, member, organization):
    blocking_with_grants(organization, owner)  # 2 left, a run of the assistant holds 5

    notice = logged_in(member).post("/assistant/", {"prompt": "Hello"}).content.decode()

    assert "Your organization's credit balance is too low for this action" in notice
    assert '<strong class="figure">2</strong> credits left' in notice


def test_the_notice_of_grants_only_says_credits_come_back_with_a_grant(owner, member, organization):
    organization.block_when_exhausted = True
    organization.save()
    grant(organization, 10)
    spend(owner, 10)

    notice = logged_in(member).post("/assistant/", {"prompt": "Hello"}).content.decode()

    assert "Your organization's credit balance is used up" in notice
    assert "comes back when credits are added" in notice
    assert "next period's allowance" not in notice
