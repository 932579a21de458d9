"""The outbox: the notifications of each firing, and the worker that delivers them.

`notifications_write` runs in the firing's transaction (alerts/services/rules.py):
one email per person told (an admin about the organization, a member about
themselves), one webhook event per endpoint and firing, each a row queued
for the worker once the transaction commits. A broker that is down then
loses nothing: the periodic sweep (`notifications_requeue_stale`) queues
what is due.

The worker (`deliver_notification`) claims a row with a conditional UPDATE
(pending and due, or a `sending` claim whose lease ran out), so two workers
or a task run twice never send the same notification at once; a sent one is
never claimed again. It sends through the channel's transport
(alerts/transports.py); a failure is retried with backoff, and no row is
claimed more than MAX_ATTEMPTS times, so that nothing loops.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Membership, Organization, Role
from alerts.models import (
    EVENT_TYPES,
    BalanceAlert,
    Channel,
    DeliveryAttempt,
    DeliveryStatus,
    Firing,
    FiringKind,
    Notification,
    OrganizationAlert,
    Recipients,
    UserAlertPolicy,
    WebhookEndpoint,
)
from alerts.payloads import BALANCE_KINDS, firing_summary, iso, severity, webhook_payload
from alerts.transports import TRANSPORTS, TransportError, taken_by_provider
from billing.periods import Period
from billing.selectors import admins_to_ask
from config.credits import format_credits

logger = logging.getLogger(__name__)

ALERT_EMAIL = "alert_email"


class RecipientRelation:
    """Who an alert email speaks to, kept in its payload as `recipient`: an
    admin is told about the organization (third person, Limits & Alerts); a
    member about their own usage (second person, their own usage page: the
    Limits & Alerts page is admin-only). Payloads written before the field
    existed were all admins' emails, so a missing one means an admin.
    """

    ADMIN = "admin"
    MEMBER = "member"


def _recipients(
    organization: Organization, firings: list[Firing], members: dict[int, Membership]
) -> dict[str, tuple[list[Firing], str]]:
    """Email address -> the firings that person is told about, and whether
    they are told as an admin or as the member those firings are about.
    """
    by_email: dict[str, list[Firing]] = {}
    told_as_admin: set[str] = set()
    all_admins: list[Membership] | None = None
    specific: dict[int, list[Membership]] = {}
    specific_balance: dict[int, list[Membership]] = {}
    alert_ids = [f.alert_id for f in firings if f.alert_id is not None]
    if alert_ids:
        through = OrganizationAlert.admins.through
        for row in through.objects.filter(organizationalert_id__in=alert_ids).select_related(
            "membership__user"
        ):
            specific.setdefault(row.organizationalert_id, []).append(row.membership)
    balance_alert_ids = [f.balance_alert_id for f in firings if f.balance_alert_id is not None]
    if balance_alert_ids:
        balance_through = BalanceAlert.admins.through
        for balance_row in balance_through.objects.filter(
            balancealert_id__in=balance_alert_ids
        ).select_related("membership__user"):
            specific_balance.setdefault(balance_row.balancealert_id, []).append(
                balance_row.membership
            )
    user_policy: tuple[list[Membership], bool] | None = None
    limit_policy_admins: list[Membership] | None = None
    for firing in firings:
        people: list[Membership]
        about_themselves: Membership | None = None
        if firing.kind == FiringKind.ORGANIZATION_ALERT or firing.kind in BALANCE_KINDS:
            alert = firing.alert or firing.balance_alert
            assert alert is not None
            if alert.notify == Recipients.SPECIFIC_ADMINS:
                chosen = specific if firing.alert else specific_balance
                people = [m for m in chosen.get(alert.pk, []) if m.role == Role.ADMIN]
            else:  # all admins, resolved now
                if all_admins is None:
                    all_admins = admins_of(organization)
                people = all_admins
        elif firing.kind == FiringKind.USER_ALERT:
            if user_policy is None:
                policy = UserAlertPolicy.objects.get(organization=organization)
                admins = [m for m in policy.admins.select_related("user") if m.role == Role.ADMIN]
                user_policy = (admins, policy.notify_user)
            policy_admins, notify_user = user_policy
            people = list(policy_admins)
            if notify_user and firing.membership_id in members:
                # The member is told about themselves, not as an admin.
                about_themselves = members[firing.membership_id]
        else:
            if limit_policy_admins is None:
                limit_policy_admins = admins_to_ask(organization=organization)
            people = limit_policy_admins
        for person in people:
            told_as_admin.add(person.user.email)
            _tell(by_email, person.user.email, firing)
        if about_themselves is not None:
            _tell(by_email, about_themselves.user.email, firing)
    return {
        email: (
            told,
            RecipientRelation.ADMIN if email in told_as_admin else RecipientRelation.MEMBER,
        )
        for email, told in by_email.items()
    }


def admins_of(organization: Organization) -> list[Membership]:
    return list(
        Membership.objects.filter(organization=organization, role=Role.ADMIN).select_related("user")
    )


def _tell(by_email: dict[str, list[Firing]], email: str, firing: Firing) -> None:
    told = by_email.setdefault(email, [])
    if firing not in told:  # an admin who is also the member is told once
        told.append(firing)


def notifications_write(
    organization: Organization,
    period: Period,
    firings: list[Firing],
    members: dict[int, Membership],
) -> None:
    group_key = uuid.uuid4().hex
    summaries = {firing.pk: firing_summary(firing) for firing in firings}
    notifications: list[tuple[Notification, list[Firing]]] = []
    for email, (told, relation) in _recipients(organization, firings, members).items():
        ordered = sorted(told, key=severity)
        notifications.append(
            (
                Notification(
                    organization=organization,
                    group_key=group_key,
                    channel=Channel.EMAIL,
                    recipient=email,
                    event_type=ALERT_EMAIL,
                    payload={
                        "organization": {"name": organization.name, "slug": organization.slug},
                        "recipient": relation,
                        "firings": [summaries[f.pk] for f in ordered],
                    },
                ),
                ordered,
            )
        )
    kinds = {EVENT_TYPES[FiringKind(f.kind)] for f in firings}
    for endpoint in WebhookEndpoint.objects.filter(
        organization=organization, disabled_at__isnull=True
    ):
        for firing in firings:
            event_type = EVENT_TYPES[FiringKind(firing.kind)]
            if event_type in endpoint.events and event_type in kinds:
                notifications.append(
                    (
                        Notification(
                            organization=organization,
                            group_key=f"{group_key}:{firing.pk}",
                            channel=Channel.WEBHOOK,
                            recipient=str(endpoint.pk),
                            event_type=event_type,
                            payload=webhook_payload(organization, firing),
                        ),
                        [firing],
                    )
                )
    if not notifications:
        return
    created = Notification.objects.bulk_create([n for n, _ in notifications])
    through = Notification.firings.through
    through.objects.bulk_create(
        [
            through(notification_id=notification.pk, firing_id=firing.pk)
            for notification, (_, told) in zip(created, notifications, strict=True)
            for firing in told
        ]
    )
    for notification in created:
        deliver_notification_on_commit(notification.pk)


def event_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_credits(value)
    if isinstance(value, datetime):
        return iso(value)
    return value


MAX_ATTEMPTS = 15


CUT_SHORT = "Cut short: the worker stopped before the outcome was recorded."


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter, capped below Redis's visibility timeout."""
    base = float(settings.NOTIFICATION_RETRY_BASE_SECONDS)
    ceiling = float(settings.CELERY_MAX_RETRY_COUNTDOWN)
    delay = min(ceiling, base * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)


def _cut_short_before(notification: Notification, now: datetime) -> bool:
    """Whether an earlier attempt was cut short: its worker died, or the
    database went away, before its outcome was written. Closes such attempts.
    """
    if notification.attempts <= 1:
        return False
    earlier = DeliveryAttempt.objects.filter(notification=notification)
    earlier.filter(finished_at__isnull=True).update(finished_at=now, error=CUT_SHORT)
    return earlier.filter(error=CUT_SHORT).exists()


def notification_claim(*, notification_id: int, now: datetime) -> Notification | None:
    """Take the row for one attempt, if it is due and has attempts left.

    The cap is part of the claim, not only of the failure path: a row whose
    attempts keep dying with their worker (killed, out of memory) never gets
    to record a failure, and would otherwise be taken again at every lease.
    """
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, claimed_until__lt=now
    )
    claimed = Notification.objects.filter(
        due, pk=notification_id, attempts__lt=MAX_ATTEMPTS
    ).update(
        status=DeliveryStatus.SENDING,
        claimed_until=now + timedelta(seconds=settings.NOTIFICATION_CLAIM_LEASE_SECONDS),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    return Notification.objects.get(pk=notification_id)


def notification_deliver(*, notification_id: int) -> None:
    """Send one notification if it is due; safe to run any number of times."""
    now = timezone.now()
    notification = notification_claim(notification_id=notification_id, now=now)
    if notification is None:
        return
    cut_short = _cut_short_before(notification, now)
    attempt = DeliveryAttempt.objects.create(notification=notification, started_at=now)
    try:
        sent = taken_by_provider(notification) if cut_short else None
        if sent is None:
            sent = TRANSPORTS[notification.channel](notification)
    except TransportError as error:
        _record_failure(notification, attempt, error)
        return
    except Exception as error:
        # A template that does not render, a payload missing a key, a bug: a
        # failed attempt like any other, retried with backoff until the last
        # one marks it failed, never left `sending` for the sweep to re-claim.
        logger.exception("Notification %s: delivery raised", notification.pk)
        _record_failure(notification, attempt, TransportError(f"{type(error).__name__}: {error}"))
        return
    finished = timezone.now()
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        finished_at=finished,
        succeeded=True,
        provider_message_id=sent.provider_message_id,
        response_status=sent.status,
    )
    Notification.objects.filter(pk=notification.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT,
        sent_at=finished,
        claimed_until=None,
        provider_message_id=sent.provider_message_id,
        last_error="",
    )


def _record_failure(
    notification: Notification, attempt: DeliveryAttempt, error: TransportError
) -> None:
    now = timezone.now()
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        finished_at=now, error=str(error)[:2000], response_status=error.status
    )
    if error.permanent or notification.attempts >= MAX_ATTEMPTS:
        Notification.objects.filter(pk=notification.pk).update(
            status=DeliveryStatus.FAILED, claimed_until=None, last_error=str(error)[:2000]
        )
        logger.error(
            "Notification %s failed for good after %s attempt(s): %s",
            notification.pk,
            notification.attempts,
            error,
        )
        return
    delay = retry_delay(notification.attempts)
    Notification.objects.filter(pk=notification.pk).update(
        status=DeliveryStatus.PENDING,
        claimed_until=None,
        next_attempt_at=now + timedelta(seconds=delay),
        last_error=str(error)[:2000],
    )
    if not settings.CELERY_TASK_ALWAYS_EAGER:  # in-process mode: the sweep retries
        try:
            deliver_notification.apply_async((notification.pk,), countdown=delay)
        except Exception:  # the broker is down: the sweep will re-queue it
            logger.warning(
                "Could not queue the retry of notification %s", notification.pk, exc_info=True
            )


EXHAUSTED = "No attempts left: the last one's worker stopped before its outcome was recorded."


def _fail_exhausted_claims(now: datetime) -> None:
    """Mark failed the rows whose last attempt's worker died: they are never
    claimed again (the claim's cap), so without this they would stay
    `sending` for ever, neither retried nor shown as failed.
    """
    exhausted = list(
        Notification.objects.filter(
            status=DeliveryStatus.SENDING, claimed_until__lt=now, attempts__gte=MAX_ATTEMPTS
        ).values_list("pk", flat=True)[:1000]
    )
    if not exhausted:
        return
    with transaction.atomic():
        failed = list(
            Notification.objects.filter(
                pk__in=exhausted, status=DeliveryStatus.SENDING, claimed_until__lt=now
            )
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        DeliveryAttempt.objects.filter(notification_id__in=failed, finished_at__isnull=True).update(
            finished_at=now, error=CUT_SHORT
        )
        Notification.objects.filter(pk__in=failed).update(
            status=DeliveryStatus.FAILED, claimed_until=None, last_error=EXHAUSTED
        )
    for pk in failed:
        logger.error("Notification %s failed for good: %s", pk, EXHAUSTED)


def notifications_requeue_stale(*, now: datetime | None = None) -> int:
    """Re-queue what should have been delivered by now: due rows whose task was
    lost (a crash between commit and publish, Redis down) and expired claims
    with attempts left; an expired claim with none left is marked failed.
    """
    now = now or timezone.now()
    _fail_exhausted_claims(now)
    stale_after = timedelta(seconds=settings.NOTIFICATION_STALE_AFTER_SECONDS)
    stale = Notification.objects.filter(
        Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now - stale_after)
        | Q(status=DeliveryStatus.SENDING, claimed_until__lt=now),
        attempts__lt=MAX_ATTEMPTS,
    ).values_list("pk", flat=True)[:1000]
    count = 0
    for pk in stale:
        deliver_notification.delay(pk)
        count += 1
    return count


@dataclass(frozen=True)
class Resent:
    queued: int
    skipped: int


def notifications_resend(*, notification_ids: Sequence[int]) -> Resent:
    """Send these notifications again, failed or sent ones included (a staff
    decision), each with every attempt allowed again. One being sent right
    now is left to its worker, so that it cannot go out twice at once.
    """

    with transaction.atomic():
        chosen = list(
            Notification.objects.filter(pk__in=notification_ids)
            .select_for_update()
            .values_list("pk", "status")
        )
        resend = [pk for pk, status in chosen if status != DeliveryStatus.SENDING]
        Notification.objects.filter(pk__in=resend).update(
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
            claimed_until=None,
            sent_at=None,
        )
        for pk in resend:
            deliver_notification_on_commit(pk)
    return Resent(queued=len(resend), skipped=len(chosen) - len(resend))


@shared_task(ignore_result=True)
def deliver_notification(notification_id: int) -> None:
    notification_deliver(notification_id=notification_id)


def _publish_delivery(notification_id: int) -> None:
    try:
        deliver_notification.delay(notification_id)
    except Exception:
        # The row is committed and pending: the periodic sweep will queue it.
        logger.warning(
            "Could not queue notification %s; the sweep will", notification_id, exc_info=True
        )


def deliver_notification_on_commit(notification_id: int) -> None:
    """Queue the delivery once the transaction commits. A broker that is down
    then must not turn a recorded write into an error: the sweep recovers it.
    """
    transaction.on_commit(partial(_publish_delivery, notification_id), robust=True)
