"""The organization's price and currency, and what its usage costs (SPEC §11,
first part): exact amounts, ISO 4217 currencies, shown where a price is set.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Organization
from billing.money import money_this_period
from tests.accounts.test_admin import organization_form, post_organization
from tests.fixtures import logged_in
from tests.helpers import assert_error, assert_shows, consume, credit_grant, ingest

pytestmark = pytest.mark.django_db

D = Decimal


def test_an_organization_has_no_price_and_usd_until_set(api):
    body = api.get("/api/v1/organization").json()
    assert (body["credit_price"], body["currency"]) == (None, "USD")


def test_the_price_and_currency_are_set_exactly_and_cleared(api, organization):
    answer = api.patch("/api/v1/organization", {"credit_price": "0.012345", "currency": "EUR"})
    assert answer.status_code == 200, answer.content
    assert (answer.json()["credit_price"], answer.json()["currency"]) == ("0.012345", "EUR")
    organization.refresh_from_db()
    assert (organization.credit_price, organization.currency) == (D("0.012345"), "EUR")
    cleared = api.patch("/api/v1/organization", {"credit_price": None})
    assert cleared.json()["credit_price"] is None
    assert Organization.objects.get(pk=organization.pk).currency == "EUR"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"currency": "eur"}, "currency"),
        ({"currency": "ZZZ"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"credit_price": -1}, "credit_price"),
        ({"credit_price": "0.0000001"}, "credit_price"),
        ({"credit_price": "free"}, "credit_price"),
    ],
)
def test_bad_prices_and_currencies_are_refused_and_nothing_is_stored(
    api, organization, body, field
):
    assert_error(api.patch("/api/v1/organization", body | {"name": "Renamed"}), 422, field=field)
    organization.refresh_from_db()
    assert (organization.name, organization.credit_price, organization.currency) == (
        "Acme Inc",
        None,
        "USD",
    )


def test_spend_is_all_usage_and_the_invoice_total_only_what_nothing_covered(organization, member):
    organization.credit_allowance = D(100)
    organization.block_when_exhausted = False
    organization.credit_price = D("0.5")
    organization.save()
    credit_grant(organization, 20)
    consume(organization, member, 130)
    money = money_this_period(organization=organization, now=timezone.now())
    assert money is not None
    assert (money.spend, money.overage, money.invoice_total) == (D(65), D(10), D(5))


def test_amounts_are_exact_to_the_last_digit(organization, member):
    organization.credit_price = D("0.000001")
    organization.save()
    ingest(organization, "123.456789", user=member)
    money = money_this_period(organization=organization, now=timezone.now())
    assert money is not None
    assert money.spend == D("0.000123456789")


def test_no_price_no_money(organization):
    assert money_this_period(organization=organization, now=timezone.now()) is None


def test_monitor_usage_shows_spend_and_invoice_total_with_the_currencys_symbol(
    organization, owner, member
):
    html = logged_in(owner).get("/usage/").content.decode()
    assert "Spend this period" not in html
    organization.credit_allowance = D(100)
    organization.block_when_exhausted = False
    organization.credit_price = D("0.25")
    organization.currency = "EUR"
    organization.save()
    ingest(organization, 130, user=member)
    html = logged_in(owner).get("/usage/").content.decode()
    assert_shows(html, "Spend this period", "€32.50", "€7.50", "€0.25 per credit")


def test_staff_set_the_price_in_the_admin_and_a_bad_currency_is_a_form_error(
    staff_client, organization
):
    response = post_organization(
        staff_client, organization, own_credit_price="0.01", currency="GBP"
    )
    assert response.status_code == 302
    organization.refresh_from_db()
    assert (organization.credit_price, organization.currency) == (D("0.01"), "GBP")
    refused = staff_client.post(
        f"/admin/accounts/organization/{organization.pk}/change/",
        organization_form(organization, currency="QQQ"),
    )
    assert refused.status_code == 200
    assert "currency" in refused.context["adminform"].form.errors
    organization.refresh_from_db()
    assert organization.currency == "GBP"
