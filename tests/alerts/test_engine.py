"""When alerts fire, whom they tell, and how the outbox delivers (tasks in-process)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core import mail

from alerts.models import DeliveryStatus, Firing, Notification, OrganizationAlert
from alerts.outbox import notification_deliver, notifications_requeue_stale
from alerts.selectors import alert_status
from alerts.services.changes import custom_limit_set, membership_update, organization_update
from alerts.services.configuration import alert_create, alert_update, user_alert_policy_update
from alerts.services.consume import usage_consume
from alerts.services.ingest import UsageInput, usage_ingest
from billing.selectors import current_period
from config.errors import InvalidInput
from tests.alerts.backends import FlakyProviderBackend
from tests.factories import AdminMembershipFactory, MembershipFactory
from tests.fixtures import run_in_threads
from tests.helpers import absolute_alert, ingest, limits_on, spend, user_alerts_on

pytestmark = pytest.mark.django_db
D = Decimal


def with_allowance(organization, allowance):
    organization.credit_allowance = D(allowance)
    organization.save()
    return organization


def emails_to(address):
    return [message for message in mail.outbox if message.to == [address]]


class TestOrganizationAlerts:
    def test_percentage_alert_fires_once_when_reached(self, organization, owner, deliver):
        with_allowance(organization, 1000)
        alert = alert_create(
            organization=organization, threshold_type="percentage", threshold=D(80)
        )
        deliver(ingest, organization, 799)
        assert not Firing.objects.exists()
        deliver(ingest, organization, 1)  # exactly 80%: reached
        firing = Firing.objects.get()
        assert (firing.threshold, firing.threshold_credits, firing.value) == (D(80), D(800), D(800))
        deliver(ingest, organization, 100)
        assert Firing.objects.count() == 1
        assert len(mail.outbox) == 1
        assert alert_status(alert, period=current_period(organization))[0] == "in_alarm"

    def test_email_says_what_crossed(self, organization, owner, deliver):
        with_allowance(organization, 1000)
        alert_create(organization=organization, threshold_type="percentage", threshold=D(75))
        with time_machine.travel(datetime(2026, 5, 10, tzinfo=UTC)):
            deliver(ingest, organization, "750.5")
        (message,) = mail.outbox
        assert message.to == [owner.user.email]
        assert "Acme Inc" in message.subject and "75%" in message.subject
        html = message.alternatives[0][0]
        for part in (message.body, html):
            assert "Acme Inc" in part
            assert "75% of the allowance (750 credits)" in part
            assert "750.5 credits" in part
            assert "75.1% of the 1,000-credit allowance" in part
            assert "May 1, 2026" in part and "Jun 1, 2026" in part
            assert "http://testserver/settings/limits/" in part

    def test_absolute_alert(self, organization, owner, deliver):
        absolute_alert(organization, "12.5")
        deliver(ingest, organization, 12)
        assert not Firing.objects.exists()
        deliver(ingest, organization, "0.5")
        assert Firing.objects.get().threshold_credits == D("12.5")

    def test_percentage_never_fires_without_allowance(self, organization, owner, deliver):
        alert_create(organization=organization, threshold_type="percentage", threshold=D(10))
        deliver(ingest, organization, 10_000)
        assert not Firing.objects.exists()
        deliver(organization_update, organization=organization, credit_allowance=D(1000))
        assert Firing.objects.get().value == D(10_000)

    def test_dropping_below_and_climbing_back_does_not_refire(self, organization, owner, deliver):
        with_allowance(organization, 100)
        alert_create(organization=organization, threshold_type="percentage", threshold=D(50))
        deliver(ingest, organization, 60)
        deliver(organization_update, organization=organization, credit_allowance=D(1000))  # now 6%
        deliver(ingest, organization, 500)  # 56%: past 50% again
        assert Firing.objects.count() == 1

    def test_editing_the_threshold_rearms_and_fires_at_once_when_past(
        self, organization, owner, deliver
    ):
        alert = absolute_alert(organization, 10)
        deliver(ingest, organization, 30)
        assert Firing.objects.count() == 1
        deliver(alert_update, alert=alert, threshold=D(20))
        assert Firing.objects.count() == 2
        assert alert_status(alert, period=current_period(organization))[0] == "in_alarm"
        deliver(alert_update, alert=alert, threshold=D(50))
        assert alert_status(alert, period=current_period(organization))[0] == "ok"
        deliver(ingest, organization, 20)
        assert Firing.objects.count() == 3

    def test_new_alert_already_passed_fires_at_once(self, organization, owner, deliver):
        deliver(ingest, organization, 30)
        deliver(absolute_alert, organization, 10)
        assert Firing.objects.count() == 1
        assert len(mail.outbox) == 1

    def test_fire_if_already_exceeded_false_waits_for_next_period(
        self, organization, owner, deliver
    ):
        with time_machine.travel(datetime(2026, 5, 10, tzinfo=UTC)):
            deliver(ingest, organization, 30)
            alert = deliver(
                alert_create,
                organization=organization,
                threshold_type="absolute",
                threshold=D(10),
                fire_if_already_exceeded=False,
            )
            deliver(ingest, organization, 5)
            assert not Firing.objects.exists()
            assert alert_status(alert, period=current_period(organization))[0] == "ok"
        with time_machine.travel(datetime(2026, 6, 2, tzinfo=UTC)):
            deliver(ingest, organization, 10)
            assert Firing.objects.get().period_start == datetime(2026, 6, 1, tzinfo=UTC)

    def test_once_per_period(self, organization, owner, deliver):
        absolute_alert(organization, 10)
        with time_machine.travel(datetime(2026, 5, 10, tzinfo=UTC)):
            deliver(ingest, organization, 10)
            deliver(ingest, organization, 10)
        with time_machine.travel(datetime(2026, 6, 10, tzinfo=UTC)):
            deliver(ingest, organization, 9)
            assert Firing.objects.count() == 1
            deliver(ingest, organization, 1)
        assert Firing.objects.count() == 2

    def test_at_most_25_alerts(self, organization):
        for threshold in range(1, 26):
            absolute_alert(organization, threshold * 100)
        with pytest.raises(InvalidInput) as raised:
            absolute_alert(organization, 1)
        assert raised.value.code == "too_many_alerts"
        assert OrganizationAlert.objects.count() == 25

    @pytest.mark.parametrize(
        ("kind", "threshold"), [("percentage", 0), ("percentage", 101), ("absolute", 0)]
    )
    def test_bad_thresholds(self, organization, kind, threshold):
        with pytest.raises(InvalidInput):
            alert_create(organization=organization, threshold_type=kind, threshold=D(threshold))

    def test_all_admins_is_resolved_when_it_fires(self, organization, owner, member, deliver):
        absolute_alert(organization, 10)
        late_admin = AdminMembershipFactory(organization=organization)
        deliver(membership_update, membership=member, role="admin")
        deliver(ingest, organization, 10)
        assert sorted(m.to[0] for m in mail.outbox) == sorted(
            [owner.user.email, late_admin.user.email, member.user.email]
        )

    def test_specific_admins(self, organization, owner, deliver):
        other_admin = AdminMembershipFactory(organization=organization)
        absolute_alert(organization, 10, admins=[other_admin])
        deliver(ingest, organization, 10)
        assert [m.to for m in mail.outbox] == [[other_admin.user.email]]

    def test_specific_admins_must_be_admins_of_the_organization(
        self, organization, member, outsider
    ):
        for wrong in (member, outsider):
            with pytest.raises(InvalidInput):
                absolute_alert(organization, 1, admins=[wrong])

    def test_several_thresholds_at_once_one_email_about_the_highest(
        self, organization, owner, deliver
    ):
        with_allowance(organization, 1000)
        for percent in (50, 75, 90):
            alert_create(
                organization=organization, threshold_type="percentage", threshold=D(percent)
            )
        deliver(ingest, organization, 950)
        assert Firing.objects.count() == 3
        (message,) = mail.outbox
        assert "90%" in message.subject and "2 more alerts" in message.subject
        assert (
            "75% of the credit allowance" in message.body
            and "50% of the credit allowance" in message.body
        )


class TestUserAlerts:
    def test_fires_once_per_user_per_period_and_notifies_the_user(
        self, organization, owner, member, deliver
    ):
        deliver(user_alerts_on, organization, 100, admins=[owner], notify_user=True)
        deliver(spend, member, 99)
        assert not Firing.objects.exists()
        deliver(spend, member, 1, source="workflow")  # all sources count
        deliver(spend, member, 50)
        firing = Firing.objects.get()
        assert (firing.kind, firing.membership, firing.value) == ("user_alert", member, D(100))
        assert sorted(m.to[0] for m in mail.outbox) == sorted([owner.user.email, member.user.email])
        assert member.user.email in mail.outbox[0].subject

    def test_enabling_fires_for_users_already_past(self, organization, owner, member, deliver):
        deliver(spend, member, 500)
        deliver(user_alerts_on, organization, 100, admins=[owner])
        assert Firing.objects.get().kind == "user_alert"

    def test_threshold_required_to_enable(self, organization):
        with pytest.raises(InvalidInput):
            user_alert_policy_update(organization=organization, enabled=True)


class TestLimitReached:
    def test_limit_policy_admins_are_told_once_per_user_per_period(
        self, organization, owner, member, deliver
    ):
        second_admin = AdminMembershipFactory(organization=organization)
        deliver(limits_on, organization, 10, admins=[second_admin])
        deliver(usage_consume, organization=organization, membership=member, credits=D(10))
        firing = Firing.objects.get()
        assert (firing.kind, firing.threshold, firing.value) == ("user_limit", D(10), D(10))
        assert [m.to for m in mail.outbox] == [[second_admin.user.email]]
        deliver(spend, member, 5)
        deliver(custom_limit_set, organization=organization, membership=member, limit=D(12))
        assert Firing.objects.count() == 1
        assert "reached their credit limit" in mail.outbox[0].subject

    def test_without_chosen_admins_all_admins_are_told(self, organization, owner, member, deliver):
        deliver(limits_on, organization, 10)
        deliver(spend, member, 10)
        assert [m.to for m in mail.outbox] == [[owner.user.email]]

    def test_lowering_a_limit_below_usage_fires(self, organization, owner, member, deliver):
        deliver(limits_on, organization, 100)
        deliver(spend, member, 20)
        deliver(custom_limit_set, organization=organization, membership=member, limit=D(15))
        assert Firing.objects.get().threshold == D(15)


class TestDelivery:
    def test_provider_failing_three_times_then_succeeding_sends_one_email(
        self, organization, owner, settings
    ):
        settings.EMAIL_BACKEND = "tests.alerts.backends.FlakyProviderBackend"
        FlakyProviderBackend.failures_left = 3
        absolute_alert(organization, 1)
        ingest(organization, 1)
        notification = Notification.objects.get()
        for _ in range(4):
            Notification.objects.filter(pk=notification.pk).update(
                next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)
            )
            notification_deliver(notification_id=notification.pk)
        notification.refresh_from_db()
        assert notification.status == DeliveryStatus.SENT
        assert notification.attempts == 4
        assert notification.provider_message_id
        assert [a.succeeded for a in notification.delivery_attempts.all()] == [
            False,
            False,
            False,
            True,
        ]
        assert "503" in notification.delivery_attempts.first().error
        assert len(mail.outbox) == 1

    def test_a_failed_attempt_waits_with_backoff(self, organization, owner, settings):
        settings.EMAIL_BACKEND = "tests.alerts.backends.FlakyProviderBackend"
        FlakyProviderBackend.failures_left = 1
        absolute_alert(organization, 1)
        ingest(organization, 1)
        notification = Notification.objects.get()
        notification_deliver(notification_id=notification.pk)
        notification.refresh_from_db()
        assert notification.status == DeliveryStatus.PENDING
        assert notification.next_attempt_at > notification.created_at
        notification_deliver(notification_id=notification.pk)  # not due yet: nothing happens
        assert notification.delivery_attempts.count() == 1

    def test_delivering_twice_sends_once(self, organization, owner):
        absolute_alert(organization, 1)
        ingest(organization, 1)
        notification = Notification.objects.get()
        notification_deliver(notification_id=notification.pk)
        notification_deliver(notification_id=notification.pk)
        assert len(mail.outbox) == 1
        assert mail.outbox[0].anymail_test_params  # went through Anymail

    def test_the_sweep_requeues_what_was_never_published(self, organization, owner):
        absolute_alert(organization, 1)
        ingest(organization, 1)  # on_commit never ran: as if Redis were down at commit
        Notification.objects.update(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC))
        assert notifications_requeue_stale() == 1
        assert len(mail.outbox) == 1
        assert notifications_requeue_stale() == 0

    def test_an_expired_claim_is_redone_once(self, organization, owner):
        """A worker that died mid-send leaves a claim; after its lease it is redone."""
        absolute_alert(organization, 1)
        ingest(organization, 1)
        Notification.objects.update(
            status="sending", claimed_until=datetime(2000, 1, 1, tzinfo=UTC), attempts=1
        )
        notifications_requeue_stale()
        notifications_requeue_stale()
        assert len(mail.outbox) == 1
        assert Notification.objects.get().status == "sent"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_ingests_across_a_threshold_fire_once(organization, owner):
    second_admin = AdminMembershipFactory(organization=organization)
    members = MembershipFactory.create_batch(5, organization=organization)
    absolute_alert(organization, 100)

    def work(index):
        usage_ingest(
            organization=organization,
            events=[
                UsageInput(f"c{index}-{n}", D(3), user=members[index % 5].external_id)
                for n in range(2)
            ],
        )

    run_in_threads(20, work)
    assert Firing.objects.count() == 1
    assert sorted(mail.outbox[i].to[0] for i in range(len(mail.outbox))) == sorted(
        [owner.user.email, second_admin.user.email]
    )


class TestWebhookDelivery:
    def test_a_410_disables_the_endpoint(self, organization, owner, deliver):
        from alerts.models import WebhookEndpoint
        from alerts.webhooks import webhook_endpoint_create
        from tests.stubs import webhook_receiver

        with webhook_receiver() as receiver:
            receiver.fail_next, receiver.failure_status = 1, 410
            endpoint, _ = webhook_endpoint_create(
                organization=organization, url=receiver.url, events=["alert.triggered"]
            )
            absolute_alert(organization, 1)
            absolute_alert(organization, 10)
            deliver(ingest, organization, 1)
            webhook = Notification.objects.get(channel="webhook")
            webhook.refresh_from_db()
            assert webhook.status == DeliveryStatus.FAILED
            assert WebhookEndpoint.objects.get(pk=endpoint.pk).disabled_at is not None
            assert len(receiver.received) == 1

            # A second alert fires, whose event the endpoint subscribes to: an
            # endpoint still enabled would be sent it, and would accept it now.
            deliver(ingest, organization, 9)
            assert Firing.objects.count() == 2
            assert len(emails_to(owner.user.email)) == 2
            assert list(Notification.objects.filter(channel="webhook")) == [webhook]
            assert len(receiver.received) == 1

    def test_private_addresses_are_refused_at_delivery_unless_allowed(
        self, organization, owner, settings
    ):
        from alerts.webhooks import webhook_endpoint_create
        from tests.stubs import webhook_receiver

        with webhook_receiver() as receiver:
            webhook_endpoint_create(
                organization=organization, url=receiver.url, events=["alert.triggered"]
            )
            settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
            absolute_alert(organization, 1)
            ingest(organization, 1)
            webhook = Notification.objects.get(channel="webhook")
            notification_deliver(notification_id=webhook.pk)
            assert receiver.received == []
        webhook.refresh_from_db()
        assert webhook.status == DeliveryStatus.FAILED
        assert "private" in webhook.last_error
