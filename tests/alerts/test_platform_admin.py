"""Platform alerts in the Django admin (SPEC §12): staff only; bad input is
a clear form error and nothing is stored; the firings are read-only history,
filtered by alert and plan.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.plans import plan_create
from alerts.platform_models import PlatformAlert, PlatformFiring
from alerts.services.platform_config import platform_alert_save
from alerts.webhooks import webhook_secret_generate
from tests.factories import OrganizationFactory
from tests.fixtures import logged_in
from tests.helpers import admin_url, ingest

pytestmark = pytest.mark.django_db

D = Decimal


def form(**fields: str) -> dict[str, str]:
    return {
        "name": "Sales: outgrowing",
        "plan": "",
        "threshold_type": "percentage",
        "threshold": "80",
        "emails": "sales@headroom.example",
        "webhook_urls": "",
        "enabled": "on",
        **fields,
    }


def errors_of(response) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was taken"
    adminform = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in adminform.errors.items()}


class TestAdd:
    def test_the_add_page_asks_only_what_staff_set(self, staff_client):
        page = staff_client.get(admin_url(PlatformAlert, "add")).content.decode()
        assert 'name="emails"' in page and 'name="webhook_urls"' in page
        assert "latest 10 firings" not in page.lower()

    def test_a_good_alert_is_stored_and_fires_where_already_passed(
        self, staff_client, django_capture_on_commit_callbacks, mailoutbox
    ):
        organization = OrganizationFactory(credit_allowance=D(100))
        ingest(organization, 90)
        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                admin_url(PlatformAlert, "add"),
                form(emails="sales@headroom.example\ncs@headroom.example, sales@headroom.example"),
            )

        assert response.status_code == 302
        alert = PlatformAlert.objects.get()
        assert alert.emails == ["sales@headroom.example", "cs@headroom.example"]
        assert (alert.threshold_type, alert.threshold, alert.plan) == ("percentage", D(80), None)
        assert PlatformFiring.objects.get().organization == organization
        assert sorted(m.to[0] for m in mailoutbox) == [
            "cs@headroom.example",
            "sales@headroom.example",
        ]

    @pytest.mark.parametrize(
        ("fields", "field", "message"),
        [
            ({"emails": "sales@headroom.example\nnot-an-address"}, "emails", "not an email"),
            ({"emails": "", "webhook_urls": ""}, "emails", "at least one email address"),
            ({"webhook_urls": "ftp://hooks.example.com/x"}, "webhook_urls", "https://"),
            ({"webhook_urls": "https://"}, "webhook_urls", "no valid host"),
            ({"threshold": "150"}, "threshold", "between 1 and 100"),
            ({"threshold": "0", "threshold_type": "absolute"}, "threshold", "greater than 0"),
            ({"threshold": ""}, "threshold", "A threshold is required"),
            ({"threshold_type": "balance_depleted"}, "threshold", "has no threshold"),
        ],
    )
    def test_bad_input_is_refused_with_a_clear_error_and_nothing_stored(
        self, staff_client, fields, field, message
    ):
        response = staff_client.post(admin_url(PlatformAlert, "add"), form(**fields))

        errors = errors_of(response)
        assert any(message in error for error in errors.get(field, [])), errors
        assert not PlatformAlert.objects.exists()

    def test_a_url_resolving_to_a_private_address_is_refused(self, staff_client, settings):
        settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
        response = staff_client.post(
            admin_url(PlatformAlert, "add"), form(webhook_urls="http://127.0.0.1:9000/hook")
        )
        assert "public address" in " ".join(errors_of(response)["webhook_urls"])
        assert not PlatformAlert.objects.exists()

    def test_balance_depleted_scoped_to_a_plan(self, staff_client):
        team = plan_create(key="team", name="Team", credit_allowance=D(1000))
        response = staff_client.post(
            admin_url(PlatformAlert, "add"),
            form(threshold_type="balance_depleted", threshold="", plan=str(team.pk)),
        )
        assert response.status_code == 302
        alert = PlatformAlert.objects.get()
        assert (alert.plan, alert.threshold) == (team, None)


class TestPlatformWebhookSecret:
    def test_unset_the_form_says_platform_webhooks_are_not_sent(self, staff_client, settings):
        settings.PLATFORM_WEBHOOK_SECRET = ""
        page = staff_client.get(admin_url(PlatformAlert, "add")).content.decode()
        assert "PLATFORM_WEBHOOK_SECRET is not set" in page

        response = staff_client.post(
            admin_url(PlatformAlert, "add"),
            form(webhook_urls="https://hooks.example.com/platform"),
            follow=True,
        )
        assert "PLATFORM_WEBHOOK_SECRET is not set" in response.content.decode()
        assert PlatformAlert.objects.get().webhook_urls == ["https://hooks.example.com/platform"]

    def test_set_the_form_says_nothing_of_it(self, staff_client, settings):
        settings.PLATFORM_WEBHOOK_SECRET = webhook_secret_generate()
        page = staff_client.get(admin_url(PlatformAlert, "add")).content.decode()
        assert "PLATFORM_WEBHOOK_SECRET is not set" not in page


@pytest.fixture
def fired(db) -> PlatformFiring:
    team = plan_create(key="team", name="Team", credit_allowance=D(100))
    alert = platform_alert_save(
        alert=PlatformAlert(
            name="Half", threshold_type="percentage", threshold=D(50), emails=["s@example.com"]
        )
    )
    on_team = OrganizationFactory(slug="on-team", name="On Team", plan=team)
    ingest(on_team, 60)
    other = OrganizationFactory(slug="no-plan", name="No Plan", credit_allowance=D(10))
    ingest(other, 60)
    return PlatformFiring.objects.get(organization=on_team, platform_alert=alert)


class TestHistory:
    def test_read_only(self, staff_client, fired):
        assert staff_client.get(admin_url(PlatformFiring, "add")).status_code == 403
        page = staff_client.get(admin_url(PlatformFiring, "change", fired.pk))
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()
        deleted = staff_client.post(admin_url(PlatformFiring, "delete", fired.pk), {"post": "yes"})
        assert deleted.status_code == 403
        assert PlatformFiring.objects.filter(pk=fired.pk).exists()

    def test_filtered_by_alert_and_by_plan(self, staff_client, fired):
        listed = staff_client.get(admin_url(PlatformFiring, "changelist"))
        assert listed.context["cl"].result_count == 2
        by_plan = staff_client.get(
            admin_url(PlatformFiring, "changelist"), {"plan__id__exact": fired.plan_id}
        )
        assert list(by_plan.context["cl"].result_list) == [fired]
        by_alert = staff_client.get(
            admin_url(PlatformFiring, "changelist"),
            {"platform_alert__id__exact": fired.platform_alert_id},
        )
        assert by_alert.context["cl"].result_count == 2

    def test_the_alerts_page_lists_its_firings(self, staff_client, fired):
        page = staff_client.get(admin_url(PlatformAlert, "change", fired.platform_alert_id))
        html = page.content.decode()
        assert "2 firings" in html
        assert "On Team (on-team): usage 60 at" in html and "No Plan (no-plan)" in html
        listed = staff_client.get(admin_url(PlatformFiring, "changelist")).content.decode()
        assert "50% of the allowance" in listed


class TestStaffOnly:
    def test_a_member_who_is_not_staff_cannot_reach_it(self, fired, owner):
        client = logged_in(owner)
        for url in (
            admin_url(PlatformAlert, "changelist"),
            admin_url(PlatformAlert, "add"),
            admin_url(PlatformAlert, "change", fired.platform_alert_id),
            admin_url(PlatformFiring, "changelist"),
        ):
            response = client.get(url)
            assert response.status_code == 302
            assert "/login/" in response["Location"]
        response = client.post(admin_url(PlatformAlert, "add"), form())
        assert response.status_code == 302
        assert PlatformAlert.objects.count() == 1

    def test_an_anonymous_visitor_cannot_reach_it(self, client, fired):
        response = client.get(admin_url(PlatformAlert, "changelist"))
        assert response.status_code == 302
