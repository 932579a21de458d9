"""The Django admin of the credit balance (SPEC §9): staff issue grants and
void them through the services (the ledger, the balance and the webhook move
as over the API), grants are never edited in place, and balance alerts, auto
top-ups and the ledger are shown read-only.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.utils import timezone

from accounts.models import Organization
from alerts.models import BalanceAlert, Channel, Notification
from alerts.services.credit_settings import (
    AutoTopUpInput,
    auto_top_up_set,
    balance_alert_create,
)
from alerts.webhooks import webhook_endpoint_create
from billing.balance import credit_balance_get
from billing.models import (
    AutoTopUp,
    BalanceCheck,
    CreditGrant,
    CreditLedgerEntry,
    GrantKind,
    GrantStatus,
    LedgerEntryType,
)
from tests.factories import AdminMembershipFactory, OrganizationFactory
from tests.fixtures import logged_in
from tests.helpers import admin_url, assert_admin_pages_load, ingest
from tests.helpers import credit_grant as granted

ISSUE_KEY = "admin-test-key"


@pytest.fixture
def funded(organization: Organization) -> Organization:
    """An organization with an allowance of 1,000 credits and nothing used."""
    Organization.objects.filter(pk=organization.pk).update(own_credit_allowance=D(1000))
    organization.refresh_from_db()
    return organization


def balance(organization: Organization) -> D | None:
    return credit_balance_get(organization=organization, now=timezone.now()).balance


def issue_form(organization: Organization, /, **fields: object) -> dict[str, object]:
    """The add page's POST: a promotional grant of 250 credits, then `fields`."""
    return {
        "organization": organization.pk,
        "kind": "promotional",
        "credits": "250",
        "priority": "50",
        "effective_at_0": "",
        "effective_at_1": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "note": "Welcome credits",
        "issue_key": ISSUE_KEY,
        **fields,
    }


def issue(client, organization: Organization, /, **fields: object):
    return client.post(admin_url(CreditGrant, "add"), issue_form(organization, **fields))


def void(client, *grants: CreditGrant):
    return client.post(
        admin_url(CreditGrant, "changelist"),
        {"action": "void_grants", "_selected_action": [grant.pk for grant in grants]},
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# Issuing credits


def test_the_grant_list_and_the_organization_lead_to_issuing_credits(staff_client, funded):
    granted(funded, "300")
    listed = staff_client.get(admin_url(CreditGrant, "changelist")).content.decode()
    assert f'href="{admin_url(CreditGrant, "add")}" class="addlink">Issue credits</a>' in listed

    page = staff_client.get(admin_url(Organization, "change", funded.pk)).content.decode()
    link = f"{admin_url(CreditGrant, 'changelist')}?organization__id__exact={funded.pk}"
    assert f'<a href="{link}">Credit grants</a>' in page
    grants = staff_client.get(link)
    assert grants.status_code == 200
    assert grants.context["cl"].result_count == 1


def test_the_issue_page_asks_for_a_promotional_grant(staff_client):
    page = staff_client.get(admin_url(CreditGrant, "add"))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Issue credits" in html
    form = page.context["adminform"].form
    assert form["kind"].value() == "promotional"
    assert list(form.fields) == [
        "organization",
        "kind",
        "credits",
        "priority",
        "effective_at",
        "expires_at",
        "note",
        "issue_key",
    ]
    # A new key each time the page is shown: two pages issue two grants.
    again = staff_client.get(admin_url(CreditGrant, "add")).context["adminform"].form
    assert form["issue_key"].value() != again["issue_key"].value()


def test_staff_issue_a_promotional_grant_through_the_service(staff_client, funded, owner):
    webhook_endpoint_create(
        organization=funded, url="https://hooks.example.com/", events=["credit_grant.created"]
    )
    assert balance(funded) == D(1000)

    response = issue(staff_client, funded, expires_at_0="2999-01-31", expires_at_1="12:00:00")

    assert response.status_code == 302, response.context["adminform"].form.errors
    grant = CreditGrant.objects.get(organization=funded)
    assert (grant.kind, grant.credits, grant.remaining, grant.note) == (
        GrantKind.PROMOTIONAL,
        D(250),
        D(250),
        "Welcome credits",
    )
    assert grant.status == GrantStatus.ACTIVE
    assert grant.expires_at is not None and grant.expires_at.year == 2999
    entries = list(CreditLedgerEntry.objects.filter(grant=grant).values_list("type", "credits"))
    assert entries == [(LedgerEntryType.GRANT, D(250))]
    assert balance(funded) == D(1250)
    # The host bills from the webhook, as for a grant made over the API.
    webhook = Notification.objects.get(channel=Channel.WEBHOOK)
    assert webhook.event_type == "credit_grant.created"
    assert webhook.payload["data"]["grant_id"] == grant.pk
    assert webhook.payload["data"]["kind"] == "promotional"


def test_a_second_click_issues_the_grant_once(staff_client, funded):
    assert issue(staff_client, funded).status_code == 302

    again = issue(staff_client, funded)

    assert again.status_code == 302
    assert CreditGrant.objects.filter(organization=funded).count() == 1
    assert CreditLedgerEntry.objects.count() == 1
    assert balance(funded) == D(1250)
    assert any("not issued again" in message for message in messages_of(again))


def test_the_same_page_sent_again_with_other_values_is_refused(staff_client, funded):
    assert issue(staff_client, funded).status_code == 302

    changed = issue(staff_client, funded, credits="900")

    assert changed.status_code == 200
    assert "open the page again" in changed.content.decode()
    assert list(CreditGrant.objects.values_list("credits", flat=True)) == [D(250)]


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"credits": "0"}, "credits", "greater than or equal to 0.000001"),
        ({"credits": "1.0000001"}, "credits", "6 decimal places"),
        ({"priority": "0"}, "priority", "between 1 and 100"),
        (
            {"expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"},
            "expires_at",
            "must be after effective_at",
        ),
        (
            {
                "effective_at_0": "2999-02-01",
                "effective_at_1": "00:00:00",
                "expires_at_0": "2999-01-01",
                "expires_at_1": "00:00:00",
            },
            "expires_at",
            "must be after effective_at",
        ),
        ({"kind": "gift"}, "kind", "Select a valid choice"),
        ({"organization": ""}, "organization", "This field is required"),
    ],
)
def test_refused_values_are_shown_on_their_field(staff_client, funded, fields, field, says):
    response = issue(staff_client, funded, **fields)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert says in " ".join(errors[field]), errors
    assert not CreditGrant.objects.exists()
    assert not CreditLedgerEntry.objects.exists()


def test_a_grant_effective_later_is_pending_and_not_counted(staff_client, funded):
    response = issue(staff_client, funded, effective_at_0="2999-01-01", effective_at_1="00:00:00")

    assert response.status_code == 302
    assert CreditGrant.objects.get().status == GrantStatus.PENDING
    assert balance(funded) == D(1000)


# Voiding


def test_void_sets_remaining_to_zero_with_a_void_entry(staff_client, funded):
    grant = granted(funded, "300")
    kept = granted(funded, "40")
    assert balance(funded) == D(1340)

    response = void(staff_client, grant)

    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.remaining == 0
    assert grant.status == GrantStatus.VOIDED
    entries = list(
        CreditLedgerEntry.objects.filter(grant=grant).order_by("id").values_list("type", "credits")
    )
    assert entries == [(LedgerEntryType.GRANT, D(300)), (LedgerEntryType.VOID, D(-300))]
    assert balance(funded) == D(1040)
    kept.refresh_from_db()
    assert kept.remaining == D(40) and kept.voided_at is None
    assert "Voided 1 grant(s)." in messages_of(response)


def test_a_second_void_changes_nothing(staff_client, funded):
    grant = granted(funded, "300")
    void(staff_client, grant)
    grant.refresh_from_db()
    voided_at = grant.voided_at
    entries = CreditLedgerEntry.objects.count()

    response = void(staff_client, grant)

    grant.refresh_from_db()
    assert (grant.remaining, grant.voided_at) == (0, voided_at)
    assert CreditLedgerEntry.objects.count() == entries
    assert balance(funded) == D(1000)
    assert messages_of(response)[-1] == "Voided 0 grant(s). 1 already voided: left as they were."


def test_voiding_one_organization_leaves_the_other(staff_client, funded, other_organization):
    ours = granted(funded, "10")
    theirs = granted(other_organization, "20")

    void(staff_client, ours)

    theirs.refresh_from_db()
    assert theirs.remaining == D(20) and theirs.voided_at is None


# Never edited in place


def test_a_grant_page_is_read_only_with_its_ledger(staff_client, funded):
    grant = granted(funded, "300", note="Contract renewal")
    url = admin_url(CreditGrant, "change", grant.pk)

    page = staff_client.get(url)

    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="_save"' not in html
    assert 'name="credits"' not in html
    assert "Contract renewal" in html
    assert "Ledger entries (the newest 100)" in html
    assert page.context["inline_admin_formsets"][0].formset.queryset.get().type == "grant"
    assert f"?grant__id__exact={grant.pk}" in html
    assert staff_client.post(url, {"credits": "9999", "note": "edited"}).status_code == 403
    grant.refresh_from_db()
    assert (grant.credits, grant.note) == (D(300), "Contract renewal")


def test_grants_and_ledger_entries_cannot_be_deleted_on_their_own(staff_client, funded):
    grant = granted(funded, "300")
    entry = CreditLedgerEntry.objects.get(grant=grant)

    assert staff_client.get(admin_url(CreditGrant, "delete", grant.pk)).status_code == 403
    assert staff_client.get(admin_url(CreditLedgerEntry, "delete", entry.pk)).status_code == 403
    assert staff_client.get(admin_url(CreditLedgerEntry, "add")).status_code == 403
    changelist = staff_client.get(admin_url(CreditGrant, "changelist"))
    actions = changelist.context["action_form"].fields["action"].choices
    assert [name for name, _ in actions if name] == ["void_grants"]


def test_an_organization_with_grants_can_still_be_deleted(staff_client, funded, owner):
    granted(funded, "300")
    balance_alert_create(organization=funded, alert_type="depleted")
    auto_top_up_set(
        organization=funded,
        settings=AutoTopUpInput(enabled=True, threshold=D(10), credits=D(100)),
    )

    page = staff_client.get(admin_url(Organization, "delete", funded.pk))
    assert page.status_code == 200
    assert not page.context["perms_lacking"]

    deleted = staff_client.post(admin_url(Organization, "delete", funded.pk), {"post": "yes"})

    assert deleted.status_code == 302
    assert not CreditGrant.objects.exists()
    assert not AutoTopUp.objects.exists()


# Lists, filters, search


def test_the_grant_list_shows_each_grant_and_filters_by_status(staff_client, funded, outsider):
    now = timezone.now()
    active = granted(funded, "100", expires_at=now + timedelta(days=20))
    pending = granted(funded, "50", effective_at=now + timedelta(days=2))
    voided = granted(funded, "70")
    void(staff_client, voided)
    elsewhere = granted(outsider.organization, "5")

    listed = staff_client.get(admin_url(CreditGrant, "changelist"))
    html = listed.content.decode()
    for label in ("Promotional", "Purchased", "Active", "Pending", "Voided"):
        assert label in html
    assert "100.000000" not in html  # credits written as the product writes them

    def status(value: str) -> list[CreditGrant]:
        response = staff_client.get(admin_url(CreditGrant, "changelist"), {"status": value})
        return list(response.context["cl"].result_list)

    assert status("active") == [elsewhere, active]
    assert status("pending") == [pending]
    assert status("voided") == [voided]
    assert status("expired") == []

    found = staff_client.get(admin_url(CreditGrant, "changelist"), {"q": "globex"})
    assert list(found.context["cl"].result_list) == [elsewhere]

    entries = staff_client.get(
        admin_url(CreditLedgerEntry, "changelist"), {"grant__id__exact": voided.pk}
    )
    assert [e.type for e in entries.context["cl"].result_list] == ["void", "grant"]


def test_expired_and_depleted_grants_are_filtered_by_their_status(staff_client, organization):
    spent = granted(organization, "10")
    ingest(organization, 10)  # no allowance: the grant pays for it all
    expiring = granted(organization, "100", expires_at=timezone.now() + timedelta(days=1))
    spent.refresh_from_db()
    assert (spent.status, expiring.status) == (GrantStatus.DEPLETED, GrantStatus.ACTIVE)

    def status(value: str) -> list[CreditGrant]:
        response = staff_client.get(admin_url(CreditGrant, "changelist"), {"status": value})
        return list(response.context["cl"].result_list)

    assert (status("depleted"), status("active"), status("expired")) == ([spent], [expiring], [])
    with time_machine.travel(timezone.now() + timedelta(days=2), tick=False):
        assert (status("expired"), status("active")) == ([expiring], [])
        assert status("depleted") == [spent]


@pytest.mark.parametrize("model", [CreditGrant, CreditLedgerEntry, AutoTopUp, BalanceAlert])
def test_balance_records_are_shown_to_staff(staff_client, funded, owner, model):
    granted(funded, "300")
    balance_alert_create(organization=funded, alert_type="dropped", threshold=D(50))
    auto_top_up_set(
        organization=funded,
        settings=AutoTopUpInput(enabled=True, threshold=D(10), credits=D(100)),
    )
    assert BalanceCheck.objects.exists()

    for obj, html in assert_admin_pages_load(staff_client, model).items():
        assert str(obj) in html


def test_balance_alerts_and_auto_top_ups_are_read_only(staff_client, funded, owner):
    alert = balance_alert_create(organization=funded, alert_type="dropped", threshold=D(50))
    top_up = auto_top_up_set(
        organization=funded,
        settings=AutoTopUpInput(enabled=True, threshold=D(10), credits=D(100)),
    )

    for model, obj in ((BalanceAlert, alert), (AutoTopUp, top_up)):
        assert staff_client.get(admin_url(model, "add")).status_code == 403
        page = staff_client.get(admin_url(model, "change", obj.pk)).content.decode()
        assert 'name="_save"' not in page
        assert staff_client.get(admin_url(model, "delete", obj.pk)).status_code == 403
    assert "50" in staff_client.get(admin_url(BalanceAlert, "changelist")).content.decode()


# Staff only


def test_a_non_staff_user_cannot_reach_the_credit_admin(funded, owner):
    grant = granted(funded, "300")
    client = logged_in(owner)

    for model, view, args in (
        (CreditGrant, "changelist", ()),
        (CreditGrant, "add", ()),
        (CreditGrant, "change", (grant.pk,)),
        (CreditLedgerEntry, "changelist", ()),
        (BalanceAlert, "changelist", ()),
        (AutoTopUp, "changelist", ()),
    ):
        response = client.get(admin_url(model, view, *args))
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]

    client.post(admin_url(CreditGrant, "add"), issue_form(funded, credits="5000"))
    void(client, grant)

    assert CreditGrant.objects.count() == 1
    grant.refresh_from_db()
    assert grant.remaining == D(300) and grant.voided_at is None


# Bounded queries


def grants_and_settings(count: int) -> None:
    """`count` organizations, each with a grant drawn on, a balance alert and an auto top-up."""
    for _ in range(count):
        organization = OrganizationFactory()
        AdminMembershipFactory(organization=organization)
        granted(organization, "10")
        ingest(organization, 1)
        balance_alert_create(organization=organization, alert_type="dropped", threshold=D(5))
        auto_top_up_set(
            organization=organization,
            settings=AutoTopUpInput(enabled=True, threshold=D(1), credits=D(5)),
        )


@pytest.mark.parametrize(
    "model",
    [CreditGrant, CreditLedgerEntry, AutoTopUp, BalanceAlert, BalanceCheck],
    ids=lambda model: model.__name__,
)
def test_changelists_cost_the_same_with_2_organizations_or_25(
    staff_client, django_assert_max_num_queries, model
):
    grants_and_settings(2)
    with django_assert_max_num_queries(12) as few:
        assert staff_client.get(admin_url(model, "changelist")).status_code == 200

    grants_and_settings(23)
    with django_assert_max_num_queries(12) as many:
        response = staff_client.get(admin_url(model, "changelist"))

    assert response.context["cl"].result_count == model.objects.count() >= 25
    assert len(many) == len(few)
