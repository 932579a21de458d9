"""The Limits & Alerts page: its sections, every form in it, the member
picker's search, tenancy, and a bounded query count with 2,000 members.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.http import HttpResponse
from django.test import Client

from accounts.models import Membership, Organization, Role, User
from alerts.models import Firing, OrganizationAlert, UserAlertPolicy
from alerts.services.changes import custom_limit_set
from alerts.services.configuration import alert_create
from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import CustomLimit, MemberUsage, UserLimitPolicy
from billing.selectors import limit_policy_get
from tests.factories import AdminMembershipFactory, MembershipFactory
from tests.fixtures import logged_in
from tests.helpers import (
    absolute_alert,
    assert_shows,
    clock_held_at,
    form_data,
    limits_on,
    page_html,
    spend,
    user_alerts_form,
)

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2025, 6, 15, 12, 30, tzinfo=UTC)
HTMX = {"HX-Request": "true"}


frozen_time = clock_held_at(NOW)


def assert_saved(who: Membership, path: str, form: dict, message: str) -> None:
    """`form`, posted to `path` by `who` with htmx, is saved: a 200 saying `message`."""
    response = logged_in(who).post(path, form, headers=HTMX)
    assert response.status_code == 200
    assert message in response.content.decode()


def alert_form(**fields: str | list[str]) -> dict[str, str | list[str]]:
    defaults = {
        "threshold_type": "percentage",
        "threshold": "75",
        "notify": "all_admins",
        "fire_if_already_exceeded": "on",
    }
    return form_data("alert", **{**defaults, **fields})


@pytest.fixture
def allowance(organization: Organization) -> Organization:
    organization.credit_allowance = D(1000)
    organization.save()
    return organization


# The page


def test_the_page_has_every_section_and_label(owner):
    html = page_html(owner, "/settings/limits/")
    for text in (
        "Organization Alerts",
        "Add alert",
        "Credit Usage Alerts",
        "Credit Alert Threshold",
        "Notify the user who triggered the alert",
        "Admins to Notify",
        "Per-User Credit Limits",
        "Default Limit Per User",
        "Exclude Agent External Deployments from Credit Limits",
        "Exclude Workflows from Credit Limits",
        "Add Custom Limit",
        "Users Exceeding Credit Budget",
        "Alert history",
    ):
        assert text in html, text
    # Real labels for the toggles and fields
    assert_shows(
        html,
        '<label for="id_user_alerts-enabled">Credit Usage Alerts</label>',
        '<label for="id_user_limits-enabled">Per-User Credit Limits</label>',
        '<label for="id_custom_limit-user">User</label>',
        '<label for="id_custom_limit-credit_limit">Credit Limit</label>',
        '<label for="id_custom_limit-unlimited">Unlimited</label>',
    )
    # Empty states say what to do
    assert "No organization alerts yet" in html
    assert "Per-user credit limits are off" in html
    assert "Nothing has fired this billing period." in html


def test_members_get_the_403_page_on_every_url(member, owner):
    alert = absolute_alert(owner.organization, 5)
    custom_limit_set(organization=owner.organization, membership=owner, limit=D(5))
    client = logged_in(member)

    for method, path in [
        ("get", "/settings/limits/"),
        ("get", "/settings/limits/alerts/new/"),
        ("post", "/settings/limits/alerts/new/"),
        ("post", f"/settings/limits/alerts/{alert.pk}/"),
        ("post", f"/settings/limits/alerts/{alert.pk}/delete/"),
        ("post", "/settings/limits/user-alerts/"),
        ("post", "/settings/limits/user-limits/"),
        ("post", "/settings/limits/custom-limits/"),
        ("post", f"/settings/limits/custom-limits/{owner.pk}/delete/"),
        ("get", "/members/search/?q=a"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 403, path
        assert "Only Admins can configure credit alerts and limits." in response.content.decode()
    assert OrganizationAlert.objects.filter(pk=alert.pk).exists()
    assert CustomLimit.objects.filter(membership=owner).exists()


def test_another_organizations_alert_and_limit_are_404(owner, outsider):
    theirs = absolute_alert(outsider.organization, 5)
    custom_limit_set(organization=outsider.organization, membership=outsider, limit=D(5))
    client = logged_in(owner)

    assert client.get(f"/settings/limits/alerts/{theirs.pk}/").status_code == 404
    assert client.post(f"/settings/limits/alerts/{theirs.pk}/delete/").status_code == 404
    assert client.post(f"/settings/limits/custom-limits/{outsider.pk}/delete/").status_code == 404
    assert OrganizationAlert.objects.filter(pk=theirs.pk).exists()
    assert CustomLimit.objects.filter(membership=outsider).exists()


# Organization alerts


def test_the_add_form_is_a_dialog_fragment_with_its_labels(owner):
    response = logged_in(owner).get("/settings/limits/alerts/new/", headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert 'id="dialog-title">Add alert</h2>' in html
    assert "<legend>Threshold type</legend>" in html
    assert "Percentage</label>" in html and "Absolute</label>" in html
    assert '<label for="id_alert-threshold">Threshold</label>' in html
    assert "All Admins</label>" in html and "Specific Admins</label>" in html
    assert '<label for="id_alert-admins">Admins</label>' in html
    assert ">Add</button>" in html


def test_adding_an_alert_answers_with_the_changed_sections(owner, allowance):
    response = logged_in(owner).post("/settings/limits/alerts/new/", alert_form(), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert "closeDialog" in response["HX-Trigger"]
    html = response.content.decode()
    assert 'id="organization-alerts"' in html and 'hx-swap-oob="true"' in html
    assert_shows(html, 'id="alert-history"', "Alert added.", "<strong>75%</strong>", "750 credits")
    alert = OrganizationAlert.objects.get()
    assert (alert.threshold_type, alert.threshold, alert.notify) == ("percentage", 75, "all_admins")


def test_an_alert_already_passed_fires_at_once_and_shows_in_the_history(owner, allowance, member):
    spend(member, 800)

    html = (
        logged_in(owner)
        .post("/settings/limits/alerts/new/", alert_form(), headers=HTMX)
        .content.decode()
    )

    assert Firing.objects.filter(kind="organization_alert").count() == 1
    assert "In alarm" in html
    assert "Organization alert" in html  # in the history


def test_an_alert_can_wait_for_the_next_period(owner, allowance, member):
    spend(member, 800)
    data = alert_form()
    del data["alert-fire_if_already_exceeded"]

    logged_in(owner).post("/settings/limits/alerts/new/", data, headers=HTMX)

    assert OrganizationAlert.objects.count() == 1
    assert not Firing.objects.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"threshold": "150"}, "A percentage threshold must be between 1 and 100."),
        ({"threshold": "0"}, "The number must be greater than 0."),
        ({"threshold": "-5"}, "The number must be greater than 0."),
        ({"threshold": "lots"}, "Enter a number, such as 500 or 12.5."),
        ({"threshold": "1" * 60}, "Ensure this value has at most 40 characters"),
        ({"threshold": "1.0000001"}, "The number must have at most 6 fractional digits."),
        ({"threshold": ""}, "This field is required."),
        ({"threshold_type": "weekly"}, "Select a valid choice."),
        ({"notify": "specific_admins"}, "Choose at least one admin to notify"),
    ],
)
def test_a_bad_alert_is_refused_inline_and_stores_nothing(owner, fields, message):
    response = logged_in(owner).post(
        "/settings/limits/alerts/new/", alert_form(**fields), headers=HTMX
    )

    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    assert 'aria-invalid="true"' in html
    assert "<html" not in html
    assert not OrganizationAlert.objects.exists()


def test_html_in_input_is_escaped_when_echoed(owner):
    response = logged_in(owner).post(
        "/settings/limits/alerts/new/",
        alert_form(threshold="<script>alert(1)</script>"),
        headers=HTMX,
    )

    html = response.content.decode()
    assert response.status_code == 422
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_specific_admins_must_be_admins_of_this_organization(owner, member, outsider):
    client = logged_in(owner)

    for someone in (member, outsider):
        response = client.post(
            "/settings/limits/alerts/new/",
            alert_form(notify="specific_admins", admins=[str(someone.pk)]),
            headers=HTMX,
        )
        assert response.status_code == 422
        assert "Select a valid choice." in response.content.decode()
    assert not OrganizationAlert.objects.exists()


def test_specific_admins_are_saved_and_shown(owner):
    second = AdminMembershipFactory(organization=owner.organization, user__name="Grace Hopper")

    html = (
        logged_in(owner)
        .post(
            "/settings/limits/alerts/new/",
            alert_form(notify="specific_admins", admins=[str(second.pk)]),
            headers=HTMX,
        )
        .content.decode()
    )

    alert = OrganizationAlert.objects.get()
    assert list(alert.admins.all()) == [second]
    assert "Grace Hopper" in html


def test_the_26th_alert_is_refused_with_a_clear_error(owner):
    for threshold in range(1, 26):
        absolute_alert(owner.organization, threshold)
    client = logged_in(owner)

    page = client.get("/settings/limits/").content.decode()
    response = client.post("/settings/limits/alerts/new/", alert_form(threshold="50"), headers=HTMX)

    assert "25 alerts at most" in page
    assert response.status_code == 422
    assert "at most 25 alerts" in response.content.decode()
    assert OrganizationAlert.objects.count() == 25


def test_the_edit_form_warns_and_editing_rearms(owner, allowance, member):
    alert = alert_create(
        organization=owner.organization, threshold_type="percentage", threshold=D(50)
    )
    spend(member, 600)
    assert Firing.objects.count() == 1
    client = logged_in(owner)

    form = client.get(f"/settings/limits/alerts/{alert.pk}/", headers=HTMX).content.decode()
    response = client.post(
        f"/settings/limits/alerts/{alert.pk}/", alert_form(threshold="55"), headers=HTMX
    )

    assert "Changing the threshold resets this alert" in form
    assert "fires at once if usage is already past the new threshold" in form
    assert ">Save</button>" in form
    assert 'value="50"' in form
    assert response.status_code == 200
    assert "Alert saved." in response.content.decode()
    alert.refresh_from_db()
    assert alert.threshold == 55
    assert Firing.objects.filter(alert=alert).count() == 2  # re-armed, and already past: fired


def test_a_bad_edit_changes_nothing(owner):
    alert = absolute_alert(owner.organization, 50)

    response = logged_in(owner).post(
        f"/settings/limits/alerts/{alert.pk}/", alert_form(threshold="abc"), headers=HTMX
    )

    assert response.status_code == 422
    alert.refresh_from_db()
    assert (alert.threshold_type, alert.threshold) == ("absolute", 50)


def test_deleting_an_alert_asks_first(owner):
    alert = absolute_alert(owner.organization, 50)
    client = logged_in(owner)

    confirm = client.get(f"/settings/limits/alerts/{alert.pk}/delete/", headers=HTMX)
    assert OrganizationAlert.objects.exists()
    deleted = client.post(f"/settings/limits/alerts/{alert.pk}/delete/", headers=HTMX)

    assert "Delete the alert at 50 credits?" in confirm.content.decode()
    assert deleted.status_code == 200
    assert "Alert deleted." in deleted.content.decode()
    assert not OrganizationAlert.objects.exists()


def test_without_htmx_forms_work_as_plain_pages(owner):
    client = logged_in(owner)

    page = client.get("/settings/limits/alerts/new/")
    bad = client.post("/settings/limits/alerts/new/", alert_form(threshold="x"))
    good = client.post("/settings/limits/alerts/new/", alert_form(threshold="10"), follow=True)

    assert "<html" in page.content.decode() and "Add alert" in page.content.decode()
    assert bad.status_code == 422 and "<html" in bad.content.decode()
    assert good.redirect_chain == [("/settings/limits/", 302)]
    assert "Alert added." in good.content.decode()


# Credit usage alerts


def test_saving_credit_usage_alerts(owner):
    form = user_alerts_form(notify_user="on", admins=[str(owner.pk)])

    assert_saved(owner, "/settings/limits/user-alerts/", form, "Credit usage alerts saved.")
    policy = UserAlertPolicy.objects.get()
    assert (policy.enabled, policy.threshold, policy.notify_user) == (True, 100, True)
    assert list(policy.admins.all()) == [owner]


def test_credit_usage_alerts_need_a_threshold_to_be_on(owner):
    response = logged_in(owner).post(
        "/settings/limits/user-alerts/", user_alerts_form(threshold=""), headers=HTMX
    )

    assert response.status_code == 422
    html = response.content.decode()
    assert "Set a threshold to turn per-user alerts on." in html
    assert 'id="credit-usage-alerts"' in html
    assert not UserAlertPolicy.objects.filter(enabled=True).exists()


def test_saved_credit_usage_alerts_show_on_the_page(owner):
    second = AdminMembershipFactory(organization=owner.organization, user__name="Ada Lovelace")
    logged_in(owner).post(
        "/settings/limits/user-alerts/", user_alerts_form(admins=[str(second.pk)]), headers=HTMX
    )

    html = logged_in(owner).get("/settings/limits/").content.decode()

    assert 'id="id_user_alerts-enabled" checked' in html
    assert 'value="100"' in html
    assert "Remove Ada Lovelace" in html  # the chosen admin, as a chip


# Per-user credit limits


def limits_form(**fields: str | list[str]) -> dict[str, str | list[str]]:
    return form_data("user_limits", **{"enabled": "on", "default_limit": "500", **fields})


def test_saving_per_user_limits_with_exclusions(owner):
    form = limits_form(exclude_workflows="on", admins=[str(owner.pk)])

    assert_saved(owner, "/settings/limits/user-limits/", form, "Per-user credit limits saved.")
    policy = UserLimitPolicy.objects.get()
    assert (policy.enabled, policy.default_limit) == (True, 500)
    assert policy.excluded_sources == ["workflow"]
    assert list(policy.admins.all()) == [owner]


def test_a_lowered_limit_shows_the_member_in_users_exceeding(owner, member):
    spend(member, 300)

    response = logged_in(owner).post(
        "/settings/limits/user-limits/", limits_form(default_limit="250"), headers=HTMX
    )

    html = response.content.decode()
    assert 'id="users-exceeding"' in html
    assert member.user.email in html
    assert "Limit reached" in html  # the history: the limit-reached firing
    assert MemberUsage.objects.get(membership=member).limit_reached_at == NOW


def test_bad_limits_are_refused_inline(owner):
    response = logged_in(owner).post(
        "/settings/limits/user-limits/", limits_form(default_limit="-1"), headers=HTMX
    )

    assert response.status_code == 422
    assert "The number must be greater than 0." in response.content.decode()
    assert not limit_policy_get(organization=owner.organization).enabled


def post_custom_limit(client: Client, **fields: str) -> HttpResponse:
    """The Add Custom Limit form, posted with htmx."""
    return client.post(
        "/settings/limits/custom-limits/", form_data("custom_limit", **fields), headers=HTMX
    )


def test_adding_an_unlimited_custom_limit(owner, member):
    response = post_custom_limit(logged_in(owner), user=str(member.pk), unlimited="on")

    assert response.status_code == 200
    html = response.content.decode()
    assert f"Custom limit set for {member.user.display_name}." in html
    assert "Unlimited</span>" in html
    assert CustomLimit.objects.get(membership=member).limit is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"credit_limit": "100", "unlimited": "on"}, "not both"),
        ({}, "Enter a credit limit, or choose Unlimited."),
        ({"credit_limit": "1e400"}, "The number must be at most"),
        ({"credit_limit": "NaN"}, "The number must be a finite number."),
    ],
)
def test_a_bad_custom_limit_is_refused_inline(owner, member, fields, message):
    response = post_custom_limit(logged_in(owner), user=str(member.pk), **fields)

    assert response.status_code == 422
    assert message in response.content.decode()
    assert not CustomLimit.objects.exists()


def test_a_custom_limit_for_someone_outside_the_organization_is_refused(owner, outsider):
    response = post_custom_limit(logged_in(owner), user=str(outsider.pk), credit_limit="10")

    assert response.status_code == 422
    assert "Select a valid choice." in response.content.decode()
    assert not CustomLimit.objects.exists()


def test_editing_and_removing_a_custom_limit(owner, member):
    custom_limit_set(organization=owner.organization, membership=member, limit=D(10))
    client = logged_in(owner)

    form = client.get(f"/settings/limits/custom-limits/{member.pk}/", headers=HTMX)
    edited = client.post(
        f"/settings/limits/custom-limits/{member.pk}/",
        {"edit_limit-credit_limit": "20"},
        headers=HTMX,
    )
    assert CustomLimit.objects.get(membership=member).limit == 20
    confirm = client.get(f"/settings/limits/custom-limits/{member.pk}/delete/", headers=HTMX)
    removed = client.post(f"/settings/limits/custom-limits/{member.pk}/delete/", headers=HTMX)

    assert "Edit custom limit" in form.content.decode()
    assert edited.status_code == 200
    assert "Remove the custom limit of" in confirm.content.decode()
    assert removed.status_code == 200
    assert not CustomLimit.objects.exists()


# Users exceeding, paginated


def test_users_exceeding_is_paginated(owner):
    organization = owner.organization
    limits_on(organization, 10)
    members = [MembershipFactory(organization=organization) for _ in range(30)]
    usage_ingest(
        organization=organization,
        events=[
            UsageInput(idempotency_key=f"k{m.pk}", credits=D(10), user=m.external_id)
            for m in members
        ],
    )
    client = logged_in(owner)

    first = client.get("/settings/limits/").content.decode()
    second = client.get(
        "/settings/limits/?exceeding_page=2", headers={**HTMX, "HX-Target": "users-exceeding"}
    ).content.decode()

    assert "Page 1 of 2 · 30 in all" in first
    assert "<html" not in second
    assert second.startswith('\n<section class="card" id="users-exceeding"') or (
        'id="users-exceeding"' in second
    )
    assert "Page 2 of 2" in second
    assert second.count("<tr>") == 1 + 5  # the header row and the 5 left


# The member picker's search


def test_member_search_finds_by_name_email_or_external_id(owner):
    organization = owner.organization
    MembershipFactory(organization=organization, user__name="Zed Shaw", user__email="zed@x.test")
    AdminMembershipFactory(organization=organization, user__name="Zoe Admin")
    MembershipFactory(organization=organization, external_id="crm-42")
    client = logged_in(owner)

    by_name = client.get("/members/search/?q=zed").content.decode()
    admins_only = client.get("/members/search/?q=z&role=admin").content.decode()
    by_external_id = client.get("/members/search/?q=crm-4").content.decode()
    nothing = client.get("/members/search/?q=%3Cb%3Enobody").content.decode()

    assert "Zed Shaw" in by_name and 'role="option"' in by_name
    assert "Zoe Admin" in admins_only and "Zed Shaw" not in admins_only
    assert by_external_id.count('role="option"') == 1
    assert "No members match “&lt;b&gt;nobody”." in nothing


def test_member_search_never_shows_another_organization(owner, outsider):
    html = logged_in(owner).get("/members/search/?q=globex").content.decode()

    assert "admin@globex.test" not in html


def test_member_search_ignores_a_bad_role(owner):
    response = logged_in(owner).get("/members/search/?role=superuser&q=" + "x" * 500)

    assert response.status_code == 200


# Query counts with a big organization


@pytest.fixture
def big_organization(owner: Organization) -> Organization:
    """2,000 members, most with usage; limits on, custom limits, alerts, firings."""
    organization = owner.organization
    organization.credit_allowance = D(100000)
    organization.save()
    users = User.objects.bulk_create(
        User(email=f"m{i}@big.test", name=f"Member {i}") for i in range(2000)
    )
    members = Membership.objects.bulk_create(
        Membership(organization=organization, user=user, role=Role.MEMBER, external_id=user.email)
        for user in users
    )
    limits_on(organization, 40, admins=[owner])
    for member in members[:40]:
        custom_limit_set(organization=organization, membership=member, limit=None)
    usage_ingest(
        organization=organization,
        events=[
            UsageInput(idempotency_key=f"big-{m.pk}", credits=D(50), user=m.external_id)
            for m in members[:1000]
        ],
    )
    for threshold in (25, 50, 75, 90):
        alert_create(
            organization=organization,
            threshold_type="percentage",
            threshold=D(threshold),
            notify="specific_admins",
            admins=[owner],
        )
    return organization


def test_the_page_query_count_is_bounded_with_2000_members(
    owner, big_organization, django_assert_max_num_queries
):
    client = logged_in(owner)
    client.get("/settings/limits/")

    with django_assert_max_num_queries(20):
        response = client.get("/settings/limits/")

    html = response.content.decode()
    assert "Page 1 of 39 · 960 in all" in html  # 1,000 over 40 credits, less 40 unlimited
    assert html.count("In alarm") == 2  # 25% and 50% of 100,000: 50,000 used


def test_the_htmx_answers_query_counts_are_bounded_with_2000_members(
    owner, big_organization, django_assert_max_num_queries
):
    client = logged_in(owner)
    client.get("/settings/limits/")
    member = Membership.objects.filter(organization=big_organization, role=Role.MEMBER).last()
    assert member is not None

    with django_assert_max_num_queries(12):
        client.get("/members/search/?q=Member 1", headers=HTMX)
    with django_assert_max_num_queries(12):
        client.get(
            "/settings/limits/?exceeding_page=3", headers={**HTMX, "HX-Target": "users-exceeding"}
        )
    with django_assert_max_num_queries(45):
        response = post_custom_limit(client, user=str(member.pk), credit_limit="5")
    assert response.status_code == 200


def test_the_member_pages_query_counts_are_bounded_with_2000_members(
    big_organization, django_assert_max_num_queries
):
    member = Membership.objects.filter(organization=big_organization, role=Role.MEMBER).first()
    assert member is not None
    client = logged_in(member)
    client.get("/me/usage/")

    with django_assert_max_num_queries(12):
        assert client.get("/me/usage/").status_code == 200
    with django_assert_max_num_queries(6):
        assert client.get("/assistant/").status_code == 200
