"""Platform alerts saved by staff, and the organizations already past them.

A platform alert added, changed or turned on may already be passed for
organizations whose usage will not move again soon: they would never be
told. Finding them is not the request's work (a platform has many
organizations) nor the write path's (which reads only its own
organization): `platform_alert_save` bumps the alert's `revision` and, on
commit, queues `settle_platform_alert`, which reads only the organizations
whose current-period usage is at or past the alert, by chunks of
`SETTLE_CHUNK` in organization order, and fires it for each in its own short
transaction (the same rule and the same ON CONFLICT insert as the write
path, so a write crossing at the same moment and the backfill record it
once between them). The beat (`platform_alerts_settle_due`) redoes, within
a minute, any revision whose task was lost.

A change of the threshold does not re-arm organizations it already fired for
this period: a platform alert fires once per organization per period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from celery import shared_task
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import DecimalField, Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Organization
from alerts.models import Notification
from alerts.platform_models import PlatformAlert, PlatformFiring, PlatformThresholdType
from alerts.services.configuration import validate_threshold
from alerts.services.platform_alerts import platform_alerts_evaluate
from alerts.webhooks import webhook_url_validate
from billing.models import OrganizationUsage
from billing.periods import organization_period
from config.dbretry import retry_on_conflict
from config.errors import InvalidInput

logger = logging.getLogger(__name__)

SETTLE_CHUNK = 500
# Every period that contains now started less than this long ago (a month,
# or a shorter transition period after an anchor day change).
PERIOD_AT_MOST = timedelta(days=32)


MAX_EMAILS = 20
MAX_WEBHOOK_URLS = 10
# A platform webhook's outbox row names its URL as its recipient.
MAX_PLATFORM_URL_LENGTH = Notification._meta.get_field("recipient").max_length or 320


def platform_threshold_validate(threshold_type: str, threshold: Decimal | None) -> None:
    if threshold_type not in PlatformThresholdType.values:
        raise InvalidInput(
            "threshold_type must be 'percentage', 'absolute' or 'balance_depleted'.",
            code="invalid",
            field="threshold_type",
        )
    if threshold_type == PlatformThresholdType.BALANCE_DEPLETED:
        if threshold is not None:
            raise InvalidInput(
                "A balance depleted alert has no threshold: leave it empty.",
                code="invalid_threshold",
                field="threshold",
            )
        return
    if threshold is None:
        raise InvalidInput("A threshold is required.", code="invalid_threshold", field="threshold")
    validate_threshold(threshold_type, threshold)


def platform_emails_validate(emails: Sequence[str]) -> list[str]:
    """The addresses, each once, in the order given."""
    addresses = list(dict.fromkeys(email.strip() for email in emails if email.strip()))
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise InvalidInput(
                f"{address!r} is not an email address.", code="invalid_email", field="emails"
            ) from None
    if len(addresses) > MAX_EMAILS:
        raise InvalidInput(
            f"At most {MAX_EMAILS} addresses.", code="too_many_emails", field="emails"
        )
    return addresses


def platform_urls_validate(urls: Sequence[str]) -> list[str]:
    """The URLs, each once: checked as an organization's webhook endpoint is."""
    checked = []
    for url in dict.fromkeys(url.strip() for url in urls if url.strip()):
        if len(url) > MAX_PLATFORM_URL_LENGTH:
            raise InvalidInput(
                f"A URL is {MAX_PLATFORM_URL_LENGTH} characters at most.",
                code="invalid_url",
                field="webhook_urls",
            )
        try:
            checked.append(webhook_url_validate(url))
        except InvalidInput as error:
            raise InvalidInput(
                f"{url}: {error.message}", code=error.code, field="webhook_urls"
            ) from None
    if len(checked) > MAX_WEBHOOK_URLS:
        raise InvalidInput(
            f"At most {MAX_WEBHOOK_URLS} URLs.", code="too_many_urls", field="webhook_urls"
        )
    return checked


def platform_alert_validate(alert: PlatformAlert) -> None:
    """Refuse what may not be stored; the lists come back cleaned."""
    platform_threshold_validate(alert.threshold_type, alert.threshold)
    alert.emails = platform_emails_validate(alert.emails)
    alert.webhook_urls = platform_urls_validate(alert.webhook_urls)
    if not alert.emails and not alert.webhook_urls:
        raise InvalidInput(
            "Give at least one email address or webhook URL to tell.",
            code="no_recipients",
            field="emails",
        )


def platform_alert_save(*, alert: PlatformAlert) -> PlatformAlert:
    """Validate and save a platform alert (staff, Django admin), and have the
    organizations already past it told, off the request.
    """
    platform_alert_validate(alert)
    with transaction.atomic():
        alert.save()
        PlatformAlert.objects.filter(pk=alert.pk).update(revision=F("revision") + 1)
        alert.refresh_from_db(fields=["revision"])
        transaction.on_commit(partial(_queue_settle, alert.pk), robust=True)
    return alert


def _queue_settle(platform_alert_id: int) -> None:
    try:
        settle_platform_alert.delay(platform_alert_id)
    except Exception:  # the broker is down: the beat settles it within a minute
        logger.warning(
            "Could not queue settling platform alert %s", platform_alert_id, exc_info=True
        )


@shared_task(ignore_result=True)
def settle_platform_alert(platform_alert_id: int) -> int:
    return platform_alert_settle(platform_alert_id)


def platform_alerts_settle_due() -> int:
    """Settle every platform alert whose last save is not settled yet (beat)."""
    due = PlatformAlert.objects.filter(settled_revision__lt=F("revision")).values_list(
        "pk", flat=True
    )
    return sum(platform_alert_settle(alert_id) for alert_id in due)


def platform_alert_settle(platform_alert_id: int, *, now: datetime | None = None) -> int:
    """Fire the alert for every organization in its scope already past it
    this period that it has not fired for. Safe to run twice, or beside the
    write path: each firing is recorded once. Returns how many fired.
    """
    alert = PlatformAlert.objects.filter(pk=platform_alert_id).first()
    if alert is None or alert.settled_revision >= alert.revision:
        return 0
    revision = alert.revision
    now = now or timezone.now()
    fired = 0
    if alert.enabled:
        after = 0
        while True:
            chunk = list(_past_it(alert, now).filter(pk__gt=after).order_by("pk")[:SETTLE_CHUNK])
            if not chunk:
                break
            fired += sum(_settle_one(alert, organization, now) for organization in chunk)
            after = chunk[-1].pk
    PlatformAlert.objects.filter(pk=alert.pk, settled_revision__lt=revision).update(
        settled_revision=revision
    )
    logger.info("Settled platform alert %s: fired for %s organizations", alert.pk, fired)
    return fired


def _past_it(alert: PlatformAlert, now: datetime) -> QuerySet[Organization]:
    """The organizations in the alert's scope that may be at or past it now:
    a superset, checked one by one by the rule itself (`_settle_one`).

    Their usage rows of a period that may be the current one, at or past the
    threshold in credits (a percentage: of the monthly allowance in force;
    an organization whose periods are irregular now, in a shorter transition
    period with a prorated allowance, is always looked at), and not fired for
    that period. `balance_depleted`: the allowance used up, or a balance of
    grants kept (which may be 0 with no usage at all this period).
    """
    organizations = Organization.objects.select_related("plan")
    if alert.plan_id is not None:
        organizations = organizations.filter(plan_id=alert.plan_id)
    usage = OrganizationUsage.objects.filter(
        organization_id=OuterRef("pk"), period_start__gt=now - PERIOD_AT_MOST, period_start__lte=now
    ).annotate(
        monthly=Coalesce(
            F("organization__own_credit_allowance"),
            F("organization__plan__credit_allowance"),
            output_field=DecimalField(),
        )
    )
    irregular = Q(organization__regular_periods_from__gt=now)
    if alert.threshold_type == PlatformThresholdType.BALANCE_DEPLETED:
        used_up = usage.filter(Q(used__gte=F("monthly")) | irregular)
        return organizations.filter(Q(credit_balance_kept_since__isnull=False) | Exists(used_up))
    threshold = alert.threshold or Decimal(0)
    if alert.threshold_type == PlatformThresholdType.ABSOLUTE:
        past = usage.filter(used__gte=threshold)
    else:
        past = usage.filter(monthly__isnull=False).filter(
            Q(used__gte=F("monthly") * threshold / 100) | irregular
        )
    fired = PlatformFiring.objects.filter(
        platform_alert=alert,
        organization_id=OuterRef("organization_id"),
        period_start=OuterRef("period_start"),
    )
    return organizations.filter(Exists(past.filter(~Exists(fired))))


@retry_on_conflict
def _settle_one(alert: PlatformAlert, organization: Organization, now: datetime) -> int:
    period = organization_period(organization, now)
    used = (
        OrganizationUsage.objects.filter(organization=organization, period_start=period.start)
        .values_list("used", flat=True)
        .first()
    ) or Decimal(0)
    with transaction.atomic():
        return len(
            platform_alerts_evaluate(
                [alert], organization=organization, period=period, used=used, now=now
            )
        )
