from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from alerts.models import (
    Channel,
    DeliveryAttempt,
    DeliveryStatus,
    Firing,
    Notification,
    OrganizationAlert,
    UserAlertPolicy,
    WebhookEndpoint,
)
from alerts.platform_models import PlatformAlert, PlatformFiring
from alerts.services.configuration import alert_create
from alerts.services.credit_settings import balance_alert_create
from alerts.services.platform_config import platform_alert_save
from alerts.webhooks import webhook_endpoint_create
from tests.factories import AdminMembershipFactory, OrganizationFactory
from tests.helpers import (
    absolute_alert,
    admin_models,
    admin_url,
    assert_admin_pages_load,
    ingest,
    user_alerts_on,
)

ALERTS_MODELS = admin_models("alerts")


@pytest.fixture
def history(organization, owner, member):
    """One of everything: an alert that fired, its email and an attempt, an
    endpoint, a balance alert, a platform alert that fired.
    """
    alert = alert_create(organization=organization, threshold_type="absolute", threshold=5)
    platform_alert_save(
        alert=PlatformAlert(
            name="Sales", threshold_type="absolute", threshold=5, emails=["sales@example.com"]
        )
    )
    balance_alert_create(organization=organization, alert_type="depleted")
    user_alerts_on(organization, 3, notify_user=True)
    webhook_endpoint_create(
        organization=organization, url="https://hooks.example.com/", events=["alert.triggered"]
    )
    ingest(organization, 6, user=member, key="k")
    assert PlatformFiring.objects.count() == 1
    email = Notification.objects.get(channel=Channel.EMAIL, recipient=owner.user.email)
    DeliveryAttempt.objects.create(
        notification=email, finished_at=timezone.now(), error="Provider unavailable (503)"
    )
    return alert


def test_the_alerts_models_are_registered():
    assert {model.__name__ for model in ALERTS_MODELS} == {
        "BalanceAlert",
        "DeliveryAttempt",
        "Firing",
        "Notification",
        "OrganizationAlert",
        "PlatformAlert",
        "PlatformFiring",
        "UserAlertPolicy",
        "WebhookEndpoint",
    }


@pytest.mark.parametrize("model", ALERTS_MODELS, ids=[m.__name__ for m in ALERTS_MODELS])
def test_changelist_add_and_change_pages_load(staff_client, history, model):
    assert_admin_pages_load(staff_client, model)


def test_history_and_logs_are_read_only(staff_client, history):
    for model in (Firing, DeliveryAttempt, Notification):
        assert staff_client.get(admin_url(model, "add")).status_code == 403
        page = staff_client.get(admin_url(model, "change", model.objects.first().pk))
        assert 'name="_save"' not in page.content.decode()


def test_filters_search_and_date_hierarchy(staff_client, history, organization, outsider):
    alert_create(organization=outsider.organization, threshold_type="absolute", threshold=9)

    found = staff_client.get(admin_url(OrganizationAlert, "changelist"), {"q": "acme"})
    assert list(found.context["cl"].result_list) == [history]

    kinds = staff_client.get(admin_url(Firing, "changelist"), {"kind": "user_alert"})
    assert {f.kind for f in kinds.context["cl"].result_list} == {"user_alert"}
    year = timezone.now().year
    by_year = staff_client.get(admin_url(Firing, "changelist"), {"triggered_at__year": year})
    assert by_year.status_code == 200

    pending = staff_client.get(admin_url(Notification, "changelist"), {"status": "pending"})
    assert pending.context["cl"].result_count == Notification.objects.count()
    by_recipient = staff_client.get(admin_url(Notification, "changelist"), {"q": "owner@acme"})
    assert [n.recipient for n in by_recipient.context["cl"].result_list] == ["owner@acme.test"]


def test_the_notification_page_shows_its_attempts(staff_client, history):
    attempt = DeliveryAttempt.objects.get()
    page = staff_client.get(
        admin_url(Notification, "change", attempt.notification_id)
    ).content.decode()
    assert "Provider unavailable (503)" in page
    assert "owner@acme.test" in page


def test_webhook_secrets_stay_out_of_the_pages(staff_client, history):
    endpoint = WebhookEndpoint.objects.get()
    listed = staff_client.get(admin_url(WebhookEndpoint, "changelist")).content.decode()
    changed = staff_client.get(admin_url(WebhookEndpoint, "change", endpoint.pk)).content.decode()
    assert "https://hooks.example.com/" in listed
    assert endpoint.secret not in listed
    assert endpoint.secret not in changed


class TestResend:
    def test_resend_queues_again_what_is_not_being_sent(
        self, staff_client, history, django_capture_on_commit_callbacks
    ):
        sent, failed, sending = Notification.objects.order_by("pk")[:3]
        earlier = timezone.now() - timedelta(hours=1)
        Notification.objects.filter(pk=sent.pk).update(status=DeliveryStatus.SENT, sent_at=earlier)
        Notification.objects.filter(pk=failed.pk).update(
            status=DeliveryStatus.FAILED, attempts=15, next_attempt_at=earlier
        )
        Notification.objects.filter(pk=sending.pk).update(
            status=DeliveryStatus.SENDING, claimed_until=timezone.now() + timedelta(minutes=5)
        )

        with django_capture_on_commit_callbacks() as callbacks:
            response = staff_client.post(
                admin_url(Notification, "changelist"),
                {
                    "action": "resend_selected",
                    "_selected_action": [sent.pk, failed.pk, sending.pk],
                },
                follow=True,
            )

        assert response.status_code == 200
        [message] = [str(m) for m in response.context["messages"]]
        assert "Queued 2 notification(s)" in message and "Skipped 1" in message
        assert len(callbacks) == 2
        for notification in (sent, failed):
            notification.refresh_from_db()
            assert notification.status == DeliveryStatus.PENDING
            assert notification.sent_at is None
            assert notification.claimed_until is None
            assert abs(notification.next_attempt_at - timezone.now()) < timedelta(minutes=1)
        sending.refresh_from_db()
        assert sending.status == DeliveryStatus.SENDING

    def test_the_queued_task_delivers(
        self, staff_client, history, django_capture_on_commit_callbacks, mailoutbox
    ):
        email = Notification.objects.filter(channel=Channel.EMAIL).first()
        Notification.objects.filter(pk=email.pk).update(status=DeliveryStatus.SENT)

        with django_capture_on_commit_callbacks(execute=True):
            staff_client.post(
                admin_url(Notification, "changelist"),
                {"action": "resend_selected", "_selected_action": [email.pk]},
            )

        email.refresh_from_db()
        assert email.status == DeliveryStatus.SENT
        assert [m.to for m in mailoutbox] == [[email.recipient]]


class TestAlertForms:
    def test_adding_an_alert_goes_through_the_service(self, staff_client, organization, owner):
        ingest(organization, 9, key="k")

        response = staff_client.post(
            admin_url(OrganizationAlert, "add"),
            {
                "organization": organization.pk,
                "threshold_type": "absolute",
                "threshold": "8",
                "notify": "specific_admins",
                "admins": [owner.pk],
                "fire_if_already_exceeded": "on",
            },
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        alert = OrganizationAlert.objects.get()
        assert list(alert.admins.all()) == [owner]
        assert Firing.objects.filter(alert=alert).exists()

    def test_adding_a_quiet_alert(self, staff_client, organization, owner):
        ingest(organization, 9, key="k")
        staff_client.post(
            admin_url(OrganizationAlert, "add"),
            {
                "organization": organization.pk,
                "threshold_type": "absolute",
                "threshold": "8",
                "notify": "all_admins",
            },
        )
        alert = OrganizationAlert.objects.get()
        assert alert.quiet_period_start is not None
        assert not Firing.objects.exists()

    def test_editing_the_threshold_re_arms(self, staff_client, history, owner):
        response = staff_client.post(
            admin_url(OrganizationAlert, "change", history.pk),
            {"threshold_type": "absolute", "threshold": "6", "notify": "all_admins"},
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        history.refresh_from_db()
        assert (history.threshold, history.generation) == (Decimal(6), 2)
        assert Firing.objects.filter(alert=history).count() == 2

    @pytest.mark.parametrize(
        ("data", "field"),
        [
            ({"threshold_type": "percentage", "threshold": "150", "notify": "all_admins"}, None),
            ({"threshold_type": "percentage", "threshold": "0.5", "notify": "all_admins"}, None),
            ({"threshold_type": "absolute", "threshold": "5", "notify": "specific_admins"}, None),
        ],
    )
    def test_bad_alerts_are_form_errors(self, staff_client, organization, owner, data, field):
        response = staff_client.post(
            admin_url(OrganizationAlert, "add"), {"organization": organization.pk, **data}
        )

        assert response.status_code == 200
        assert response.context["adminform"].form.errors
        assert not OrganizationAlert.objects.exists()

    def test_admins_of_another_organization_are_refused(
        self, staff_client, organization, owner, outsider
    ):
        response = staff_client.post(
            admin_url(OrganizationAlert, "add"),
            {
                "organization": organization.pk,
                "threshold_type": "absolute",
                "threshold": "5",
                "notify": "specific_admins",
                "admins": [outsider.pk],
            },
        )

        errors = response.context["adminform"].form.errors
        assert "not an admin of this organization" in str(errors["admins"])
        assert not OrganizationAlert.objects.exists()

    def test_the_26th_alert_is_refused(self, staff_client, organization):
        for threshold in range(1, 26):
            alert_create(organization=organization, threshold_type="absolute", threshold=threshold)
        response = staff_client.post(
            admin_url(OrganizationAlert, "add"),
            {
                "organization": organization.pk,
                "threshold_type": "absolute",
                "threshold": "99",
                "notify": "all_admins",
            },
        )
        assert "at most 25 alerts" in str(response.context["adminform"].form.errors)

    def test_user_alert_policy(self, staff_client, organization, owner):
        refused = staff_client.post(
            admin_url(UserAlertPolicy, "add"), {"organization": organization.pk, "enabled": "on"}
        )
        assert "Set a threshold" in str(refused.context["adminform"].form.errors)

        response = staff_client.post(
            admin_url(UserAlertPolicy, "add"),
            {
                "organization": organization.pk,
                "enabled": "on",
                "threshold": "40",
                "notify_user": "on",
                "admins": [owner.pk],
            },
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        policy = UserAlertPolicy.objects.get()
        assert (policy.enabled, policy.threshold, policy.notify_user) == (True, Decimal(40), True)
        assert list(policy.admins.all()) == [owner]

        staff_client.post(
            admin_url(UserAlertPolicy, "change", policy.pk), {"threshold": "50", "admins": []}
        )
        policy.refresh_from_db()
        assert (policy.enabled, policy.threshold, policy.generation) == (False, Decimal(50), 3)
        assert not policy.admins.exists()


class TestWebhookForms:
    def test_adding_an_endpoint_shows_the_secret_once(self, staff_client, organization):
        response = staff_client.post(
            admin_url(WebhookEndpoint, "add"),
            {
                "organization": organization.pk,
                "url": "https://hooks.example.com/in",
                "events": ["alert.triggered", "user_limit.reached"],
            },
            follow=True,
        )

        assert response.status_code == 200
        [once] = [str(m) for m in response.context["messages"] if "shown only this once" in str(m)]
        secret = re.search(r"whsec_[A-Za-z0-9+/=]+", once).group()
        endpoint = WebhookEndpoint.objects.get()
        assert endpoint.secret == secret
        assert endpoint.events == ["alert.triggered", "user_limit.reached"]
        again = staff_client.get(admin_url(WebhookEndpoint, "change", endpoint.pk))
        assert secret not in again.content.decode()

    def test_private_urls_are_refused(self, staff_client, organization, settings):
        settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False

        response = staff_client.post(
            admin_url(WebhookEndpoint, "add"),
            {
                "organization": organization.pk,
                "url": "http://127.0.0.1/x",
                "events": ["alert.triggered"],
            },
        )

        assert "public address" in str(response.context["adminform"].form.errors["url"])
        assert not WebhookEndpoint.objects.exists()

    def test_re_enabling_a_disabled_endpoint(self, staff_client, organization):
        endpoint, _ = webhook_endpoint_create(
            organization=organization, url="https://h.com/", events=["alert.triggered"]
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            disabled_at=timezone.now(), disabled_reason="410 Gone"
        )

        response = staff_client.post(
            admin_url(WebhookEndpoint, "change", endpoint.pk),
            {
                "url": "https://h.com/",
                "events": ["alert.triggered"],
                "disabled_at_0": "",
                "disabled_at_1": "",
                "disabled_reason": "",
            },
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        endpoint.refresh_from_db()
        assert endpoint.disabled_at is None


class TestQueryCounts:
    """Changelists cost the same with 2 organizations' history or 25."""

    @staticmethod
    def make_history(count: int) -> None:
        for _ in range(count):
            organization = OrganizationFactory()
            admin_membership = AdminMembershipFactory(organization=organization)
            absolute_alert(organization, 1, admins=[admin_membership])
            user_alerts_on(organization, 1, admins=[admin_membership])
            balance_alert_create(organization=organization, alert_type="depleted")
            webhook_endpoint_create(
                organization=organization,
                url="https://hooks.example.com/",
                events=["alert.triggered"],
            )
            platform_alert_save(
                alert=PlatformAlert(
                    name="All", threshold_type="absolute", threshold=1, emails=["s@example.com"]
                )
            )
            ingest(organization, 2, user=admin_membership, key="k")
            for notification in Notification.objects.filter(organization=organization):
                DeliveryAttempt.objects.create(notification=notification, error="503")

    @pytest.mark.parametrize("model", ALERTS_MODELS, ids=[m.__name__ for m in ALERTS_MODELS])
    def test_changelists(self, staff_client, django_assert_max_num_queries, model):
        self.make_history(2)
        with django_assert_max_num_queries(12) as few:
            assert staff_client.get(admin_url(model, "changelist")).status_code == 200

        self.make_history(23)
        with django_assert_max_num_queries(12) as many:
            response = staff_client.get(admin_url(model, "changelist"))

        assert response.context["cl"].result_count == model.objects.count() >= 25
        assert len(many) == len(few)

    def test_an_alert_page_with_many_admins(
        self, staff_client, organization, owner, django_assert_max_num_queries
    ):
        admins = [owner, *AdminMembershipFactory.create_batch(30, organization=organization)]
        alert = absolute_alert(organization, 5, admins=admins)

        with django_assert_max_num_queries(10):
            response = staff_client.get(admin_url(OrganizationAlert, "change", alert.pk))

        assert response.content.decode().count(" in Acme Inc (admin)</option>") == 31
