"""The Django admin: Headroom's name on it, and credits written as the product writes them."""

from __future__ import annotations

import re
from decimal import Decimal as D

import pytest
from django.contrib import admin
from django.db import models
from django.urls import reverse

from accounts.admin import OrganizationAdmin
from accounts.models import Organization
from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import DailyUsage, MemberUsage, OrganizationUsage, SourceUsage, UsageEvent
from config.admin_site import CreditsAdminMixin, HeadroomAdminSite, is_credits_field
from tests.accounts.test_admin import change_url, organization_form
from tests.factories import OrganizationFactory
from tests.helpers import absolute_alert, ingest, user_alerts_on

pytestmark = pytest.mark.django_db


def cells(html: str, field: str) -> list[str]:
    """The text of a change list's column, row by row."""
    return re.findall(rf'<t[dh] class="field-{field}[^"]*">(?:<a [^>]*>)?([^<]*)<', html)


def changelist(staff_client, model: type[models.Model]) -> str:
    info = (model._meta.app_label, model._meta.model_name)
    response = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
    assert response.status_code == 200
    return response.content.decode()


def test_the_admin_says_headroom_and_links_to_the_site(staff_client):
    response = staff_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert isinstance(admin.site, HeadroomAdminSite)
    html = response.content.decode()
    assert "<title>Platform | Headroom admin</title>" in html
    assert '<div id="site-name"><a href="/admin/">Headroom administration</a></div>' in html
    assert '<a href="/">View site</a>' in html
    assert "Django administration" not in html


def test_the_organization_list_shows_credits_without_trailing_zeros(staff_client):
    OrganizationFactory(slug="acme", name="Acme", credit_allowance=D(100))
    OrganizationFactory(slug="globex", name="Globex", credit_allowance=D("0.5"))
    OrganizationFactory(slug="initech", name="Initech", credit_allowance=D("1234.000001"))

    html = changelist(staff_client, Organization)

    assert sorted(cells(html, "own_credit_allowance")) == ["0.5", "100", "1234.000001"]
    assert ".000000" not in html and "0.500000" not in html
    # The column keeps its title and stays sortable by the field.
    header = re.search(r'class="sortable column-own_credit_allowance.*?</th>', html, re.DOTALL)
    assert header is not None and re.search(
        r'<a href="\?o=3[.\d]*">Credit allowance</a>', header[0]
    )


def test_the_usage_lists_show_credits_without_trailing_zeros(staff_client, organization, member):
    usage_ingest(
        organization=organization,
        events=[
            UsageInput("a", D(100), user=member.external_id),
            UsageInput("b", D("0.5"), user=member.external_id),
        ],
    )

    assert sorted(cells(changelist(staff_client, UsageEvent), "credits")) == ["0.5", "100"]
    for model in (OrganizationUsage, MemberUsage, SourceUsage, DailyUsage):
        html = changelist(staff_client, model)
        assert cells(html, "used") == ["100.5"], model
        assert ".500000" not in html, model
    assert cells(changelist(staff_client, MemberUsage), "counted") == ["100.5"]


def test_read_only_pages_show_credits_without_trailing_zeros(staff_client, organization, member):
    ingest(organization, "0.5", key="a")
    event = UsageEvent.objects.get()

    response = staff_client.get(reverse("admin:billing_usageevent_change", args=[event.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'<div class="readonly">0.5</div>', html)
    assert "0.500000" not in html  # in the title and the breadcrumbs too


def test_change_forms_show_credits_without_trailing_zeros(staff_client, organization, owner):
    organization.credit_allowance = D(100)
    organization.save()
    alert = absolute_alert(organization, "0.5")
    user_alerts_on(organization, 40, notify_user=True)

    html = staff_client.get(change_url(organization)).content.decode()
    assert 'name="own_credit_allowance" value="100"' in html
    assert 'name="alerts-0-threshold" value="0.5"' in html
    # Still a number input taking every credit's decimal place.
    assert re.search(r'type="number" name="own_credit_allowance" value="100" step="0.000001"', html)

    html = staff_client.get(
        reverse("admin:alerts_organizationalert_change", args=[alert.pk])
    ).content.decode()
    assert 'name="threshold" value="0.5"' in html

    policy = organization.user_alert_policy
    html = staff_client.get(
        reverse("admin:alerts_useralertpolicy_change", args=[policy.pk])
    ).content.decode()
    assert 'name="threshold" value="40"' in html


def test_a_saved_form_keeps_the_credits_it_was_given(staff_client, organization):
    response = staff_client.post(
        change_url(organization), organization_form(organization, own_credit_allowance="0.000001")
    )

    assert response.status_code == 302, response.content[:2000]
    organization.refresh_from_db()
    assert organization.credit_allowance == D("0.000001")
    html = staff_client.get(change_url(organization)).content.decode()
    assert 'name="own_credit_allowance" value="0.000001"' in html


def test_a_refused_value_is_shown_as_it_was_typed(staff_client, organization):
    response = staff_client.post(
        change_url(organization), organization_form(organization, own_credit_allowance="1.0000001")
    )

    assert response.status_code == 200
    assert 'name="own_credit_allowance" value="1.0000001"' in response.content.decode()


def _admins_with_credits():
    for model, model_admin in admin.site._registry.items():
        yield model, type(model_admin)
        for inline in model_admin.inlines:
            yield inline.model, inline


def test_every_admin_showing_credits_writes_them_as_the_product_does():
    """A new admin of a model with credits must use the mixin (else: 100.000000)."""
    without = [
        f"{model._meta.label} in {admin_class.__name__}"
        for model, admin_class in _admins_with_credits()
        if any(is_credits_field(field) for field in model._meta.concrete_fields)
        and not issubclass(admin_class, CreditsAdminMixin)
    ]

    assert without == []


def test_a_credits_column_edited_in_the_list_stays_the_field(rf):
    class EditableAllowance(OrganizationAdmin):
        list_display_links = ("slug",)
        list_editable = ("own_credit_allowance",)

    listed = EditableAllowance(Organization, admin.site).get_list_display(rf.get("/"))
    plain = OrganizationAdmin(Organization, admin.site).get_list_display(rf.get("/"))

    # Django edits a list column only by its field's name; the input shows 100, not 100.000000.
    assert "own_credit_allowance" in listed
    assert "own_credit_allowance" not in plain
