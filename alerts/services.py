"""Alert evaluation: when an alert fires is decided here, and only here.

Two entry points:
- `alerts_on_usage`: in the write path, inside the transaction that moved
  the totals. Fires what this write crossed (before < threshold <= after).
- `alerts_evaluate_organization`: after a change that can move an alert
  (alert created or edited, allowance, limits or alert policy changed, a
  role changed). Fires what is at or past its threshold and has not fired.

Either way a firing is an INSERT guarded by the unique `dedupe_key`, so it is
recorded once however many workers or requests race; its notifications are
written in the same transaction and delivered by workers after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Membership, Organization, Role
from accounts.selectors import validate_admins
from alerts.models import (
    MAX_ORGANIZATION_ALERTS,
    Channel,
    Firing,
    FiringKind,
    Notification,
    OrganizationAlert,
    Recipients,
    ThresholdType,
    UserAlertPolicy,
    WebhookEndpoint,
)
from alerts.tasks import deliver_notification_on_commit
from billing.models import MemberUsage
from billing.periods import Period, organization_period
from billing.selectors import admins_to_ask, limit_rules_get, organization_used
from config import rawsql
from config.credits import CREDIT_QUANTUM, format_credits
from config.dbretry import retry_on_conflict
from config.errors import InvalidInput, NotFound

EVENT_TYPES = {
    FiringKind.ORGANIZATION_ALERT: "alert.triggered",
    FiringKind.USER_ALERT: "user_alert.triggered",
    FiringKind.USER_LIMIT: "user_limit.reached",
}
ALERT_EMAIL = "alert_email"


@dataclass(frozen=True)
class MemberChange:
    """What one write did to one member's totals in one period."""

    membership_id: int
    used_before: Decimal
    used_after: Decimal
    counted_after: Decimal
    limit: Decimal | None
    limit_reached_now: bool


@dataclass(frozen=True)
class UsageChange:
    """What one write did to an organization's totals in one period."""

    organization: Organization
    period: Period
    used_before: Decimal
    used_after: Decimal
    members: Sequence[MemberChange] = ()


@dataclass
class _Candidate:
    kind: str
    dedupe_key: str
    threshold: Decimal
    threshold_credits: Decimal
    value: Decimal
    alert: OrganizationAlert | None = None
    membership_id: int | None = None


def threshold_credits(alert: OrganizationAlert, allowance: Decimal | None) -> Decimal | None:
    """The alert's threshold in credits; None for a percentage without allowance."""
    if alert.threshold_type == ThresholdType.ABSOLUTE:
        return alert.threshold
    if allowance is None:
        return None
    return (allowance * alert.threshold / 100).quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_UP)


def _organization_alert_candidate(
    alert: OrganizationAlert, *, period: Period, value: Decimal, threshold: Decimal
) -> _Candidate:
    return _Candidate(
        kind=FiringKind.ORGANIZATION_ALERT,
        dedupe_key=alert.firing_key(period),
        threshold=alert.threshold,
        threshold_credits=threshold,
        value=value,
        alert=alert,
    )


def _user_alert_candidate(
    policy: UserAlertPolicy, *, membership_id: int, period: Period, value: Decimal
) -> _Candidate:
    assert policy.threshold is not None
    return _Candidate(
        kind=FiringKind.USER_ALERT,
        dedupe_key=f"user_alert:{membership_id}:{period.start.isoformat()}:{policy.generation}",
        threshold=policy.threshold,
        threshold_credits=policy.threshold,
        value=value,
        membership_id=membership_id,
    )


def _user_limit_candidate(
    *, membership_id: int, period: Period, limit: Decimal, value: Decimal
) -> _Candidate:
    return _Candidate(
        kind=FiringKind.USER_LIMIT,
        dedupe_key=f"user_limit:{membership_id}:{period.start.isoformat()}",
        threshold=limit,
        threshold_credits=limit,
        value=value,
        membership_id=membership_id,
    )


def alerts_on_usage(change: UsageChange) -> list[Firing]:
    """Fire what this write crossed. Runs inside the write's transaction; one
    query when nothing fires, whatever the number of events.
    """
    organization = change.organization
    alerts, policy = _alert_configuration(organization)
    candidates: list[_Candidate] = []
    for alert in alerts:
        if alert.quiet_period_start == change.period.start:
            continue
        threshold = threshold_credits(alert, change.period.allowance(organization.credit_allowance))
        if threshold is not None and change.used_before < threshold <= change.used_after:
            candidates.append(
                _organization_alert_candidate(
                    alert, period=change.period, value=change.used_after, threshold=threshold
                )
            )
    if change.members:
        for member in change.members:
            if (
                policy is not None
                and policy.threshold is not None
                and member.used_before < policy.threshold <= member.used_after
            ):
                candidates.append(
                    _user_alert_candidate(
                        policy,
                        membership_id=member.membership_id,
                        period=change.period,
                        value=member.used_after,
                    )
                )
            if member.limit_reached_now and member.limit is not None:
                candidates.append(
                    _user_limit_candidate(
                        membership_id=member.membership_id,
                        period=change.period,
                        limit=member.limit,
                        value=member.counted_after,
                    )
                )
    return _fire(organization, change.period, candidates)


def _alert_configuration(
    organization: Organization,
) -> tuple[list[OrganizationAlert], UserAlertPolicy | None]:
    """The organization's alerts and its enabled per-user alert policy, in one
    query written as SQL: every write runs it (see config/rawsql.py).
    """
    rows = rawsql.fetch_all(
        f"""
        SELECT {rawsql.columns(UserAlertPolicy, "p")}, {rawsql.columns(OrganizationAlert, "a")}
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {UserAlertPolicy._meta.db_table} p
            ON p.organization_id = %s AND p.enabled
        LEFT JOIN {OrganizationAlert._meta.db_table} a ON a.organization_id = %s
        ORDER BY a.threshold_type, a.threshold, a.id
        """,
        [organization.pk, organization.pk],
    )
    split = rawsql.column_count(UserAlertPolicy)
    first = rows[0]
    policy = rawsql.instance(UserAlertPolicy, first[:split]) if first[0] is not None else None
    alerts = [
        rawsql.instance(OrganizationAlert, row[split:]) for row in rows if row[split] is not None
    ]
    for alert in alerts:
        alert.organization = organization
    return alerts, policy


def alerts_evaluate_organization(
    *, organization: Organization, now: datetime | None = None
) -> list[Firing]:
    """Fire every alert of the current period that is at or past its threshold
    and has not fired yet. For changes of configuration, not for each write.
    """
    period = organization_period(organization, now or timezone.now())
    used = organization_used(organization=organization, period=period)
    alerts, policy = _alert_configuration(organization)
    candidates: list[_Candidate] = []
    for alert in alerts:
        threshold = threshold_credits(alert, period.allowance(organization.credit_allowance))
        if threshold is not None and used >= threshold and alert.quiet_period_start != period.start:
            candidates.append(
                _organization_alert_candidate(alert, period=period, value=used, threshold=threshold)
            )
    if (
        policy is not None
        and policy.threshold is not None
        # Saved not to tell members already past: only crossings (above) fire this period.
        and policy.quiet_period_start != period.start
    ):
        for membership_id, member_used in MemberUsage.objects.filter(
            organization=organization, period_start=period.start, used__gte=policy.threshold
        ).values_list("membership_id", "used"):
            candidates.append(
                _user_alert_candidate(
                    policy, membership_id=membership_id, period=period, value=member_used
                )
            )
    reached = list(
        MemberUsage.objects.filter(
            organization=organization, period_start=period.start, limit_reached_at__isnull=False
        ).values_list("membership_id", "counted")
    )
    if reached:
        rules = limit_rules_get(organization=organization, membership_ids=[m for m, _ in reached])
        for membership_id, counted in reached:
            limit = rules.limit_for(membership_id)
            if limit is not None and counted >= limit:
                candidates.append(
                    _user_limit_candidate(
                        membership_id=membership_id, period=period, limit=limit, value=counted
                    )
                )
    return _fire(organization, period, candidates)


def _fire(organization: Organization, period: Period, candidates: list[_Candidate]) -> list[Firing]:
    """Record the candidates that have not fired yet, and their notifications."""
    if not candidates:
        return []
    now = timezone.now()
    members = {
        membership.pk: membership
        for membership in Membership.objects.filter(
            pk__in={c.membership_id for c in candidates if c.membership_id is not None}
        ).select_related("user")
    }
    firings = _insert_firings(organization, period, candidates, members, now)
    if firings:
        _write_notifications(organization, period, firings, members)
    return firings


def _insert_firings(
    organization: Organization,
    period: Period,
    candidates: list[_Candidate],
    members: dict[int, Membership],
    now: datetime,
) -> list[Firing]:
    """INSERT … ON CONFLICT DO NOTHING: only the firings this call recorded come back."""
    rows = []
    for candidate in candidates:
        membership = members.get(candidate.membership_id) if candidate.membership_id else None
        rows.append(
            Firing(
                organization=organization,
                kind=candidate.kind,
                alert=candidate.alert,
                membership=membership,
                user_external_id=membership.external_id if membership else "",
                threshold_type=candidate.alert.threshold_type if candidate.alert else "",
                threshold=candidate.threshold,
                threshold_credits=candidate.threshold_credits,
                value=candidate.value,
                allowance=period.allowance(organization.credit_allowance),
                period_start=period.start,
                period_end=period.end,
                triggered_at=now,
                dedupe_key=candidate.dedupe_key,
            )
        )
    fields: list[Field[Any, Any]] = [
        Firing._meta.get_field(name)  # type: ignore[misc]
        for name in (
            "organization",
            "kind",
            "alert",
            "membership",
            "user_external_id",
            "threshold_type",
            "threshold",
            "threshold_credits",
            "value",
            "allowance",
            "period_start",
            "period_end",
            "triggered_at",
            "dedupe_key",
        )
    ]
    columns = ", ".join(str(field.column) for field in fields)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    params = [
        field.get_db_prep_save(getattr(row, field.attname), connection)
        for row in rows
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Firing._meta.db_table} ({columns})
            VALUES {placeholders}
            ON CONFLICT (organization_id, dedupe_key) DO NOTHING
            RETURNING id, dedupe_key
            """,
            params,
        )
        inserted = dict((key, pk) for pk, key in cursor.fetchall())
    recorded = []
    for row in rows:
        if row.dedupe_key in inserted:
            row.pk = inserted[row.dedupe_key]
            row._state.adding = False
            recorded.append(row)
    return recorded


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
    alert_ids = [f.alert_id for f in firings if f.alert_id is not None]
    if alert_ids:
        through = OrganizationAlert.admins.through
        for row in through.objects.filter(organizationalert_id__in=alert_ids).select_related(
            "membership__user"
        ):
            specific.setdefault(row.organizationalert_id, []).append(row.membership)
    user_policy: tuple[list[Membership], bool] | None = None
    limit_policy_admins: list[Membership] | None = None
    for firing in firings:
        people: list[Membership]
        about_themselves: Membership | None = None
        if firing.kind == FiringKind.ORGANIZATION_ALERT:
            assert firing.alert is not None
            if firing.alert.notify == Recipients.SPECIFIC_ADMINS:
                people = [m for m in specific.get(firing.alert.pk, []) if m.role == Role.ADMIN]
            else:  # all admins, resolved now
                if all_admins is None:
                    all_admins = list(
                        Membership.objects.filter(
                            organization=organization, role=Role.ADMIN
                        ).select_related("user")
                    )
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


def _tell(by_email: dict[str, list[Firing]], email: str, firing: Firing) -> None:
    told = by_email.setdefault(email, [])
    if firing not in told:  # an admin who is also the member is told once
        told.append(firing)


def firing_summary(firing: Firing) -> dict[str, Any]:
    """What a message says about one firing (stored with the notification)."""
    percent_of_allowance = (
        format_credits(
            (firing.value * 100 / firing.allowance).quantize(Decimal("0.1"), ROUND_HALF_UP)
        )
        if firing.allowance
        else None
    )
    return {
        "firing_id": firing.pk,
        "kind": firing.kind,
        "alert_id": firing.alert_id,
        "user": firing.user_external_id or None,
        "user_email": firing.membership.user.email if firing.membership else None,
        "threshold_type": firing.threshold_type or None,
        "threshold": format_credits(firing.threshold),
        "threshold_credits": format_credits(firing.threshold_credits),
        "value": format_credits(firing.value),
        "allowance": format_credits(firing.allowance) if firing.allowance is not None else None,
        "percent_of_allowance": percent_of_allowance,
        "period_start": firing.period_start.isoformat(),
        "period_end": firing.period_end.isoformat(),
        "triggered_at": firing.triggered_at.isoformat(),
    }


def webhook_payload(organization: Organization, firing: Firing) -> dict[str, Any]:
    """The Standard Webhooks payload of one firing."""
    return {
        "type": EVENT_TYPES[FiringKind(firing.kind)],
        "timestamp": firing.triggered_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "organization": organization.slug,
            "alert_id": firing.alert_id,
            "user": firing.user_external_id or None,
            "threshold": format_credits(firing.threshold),
            "value": format_credits(firing.value),
            "period_start": firing.period_start.isoformat().replace("+00:00", "Z"),
            "period_end": firing.period_end.isoformat().replace("+00:00", "Z"),
        },
    }


def _write_notifications(
    organization: Organization,
    period: Period,
    firings: list[Firing],
    members: dict[int, Membership],
) -> None:
    group_key = uuid.uuid4().hex
    summaries = {firing.pk: firing_summary(firing) for firing in firings}
    notifications: list[tuple[Notification, list[Firing]]] = []
    for email, (told, relation) in _recipients(organization, firings, members).items():
        ordered = sorted(told, key=lambda f: f.threshold_credits, reverse=True)
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


def validate_threshold(threshold_type: str, threshold: Decimal) -> None:
    if threshold_type not in ThresholdType.values:
        raise InvalidInput(
            "threshold_type must be 'percentage' or 'absolute'.",
            code="invalid",
            field="threshold_type",
        )
    if threshold <= 0:
        raise InvalidInput(
            "The threshold must be greater than 0.", code="invalid_threshold", field="threshold"
        )
    if threshold_type == ThresholdType.PERCENTAGE and not 1 <= threshold <= 100:
        raise InvalidInput(
            "A percentage threshold must be between 1 and 100.",
            code="invalid_threshold",
            field="threshold",
        )


def validate_recipients(
    organization: Organization, notify: str, admins: Sequence[Membership]
) -> None:
    if notify not in Recipients.values:
        raise InvalidInput(
            "notify must be 'all_admins' or 'specific_admins'.", code="invalid", field="notify"
        )
    validate_admins(organization=organization, admins=admins)
    if notify == Recipients.SPECIFIC_ADMINS and not admins:
        raise InvalidInput(
            "Choose at least one admin to notify, or notify all admins.",
            code="admins_required",
            field="admins",
        )


def alert_create(
    *,
    organization: Organization,
    threshold_type: str,
    threshold: Decimal,
    notify: str = Recipients.ALL_ADMINS,
    admins: Sequence[Membership] = (),
    fire_if_already_exceeded: bool = True,
) -> OrganizationAlert:
    """Add an organization alert; one already passed fires at once unless
    `fire_if_already_exceeded` is False, in which case it waits for the next period.
    """
    validate_threshold(threshold_type, threshold)
    validate_recipients(organization, notify, admins)
    with transaction.atomic():
        # Lock the organization so that two concurrent creations cannot pass the cap together.
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if (
            OrganizationAlert.objects.filter(organization=organization).count()
            >= MAX_ORGANIZATION_ALERTS
        ):
            raise InvalidInput(
                f"An organization can have at most {MAX_ORGANIZATION_ALERTS} alerts.",
                code="too_many_alerts",
                field="threshold",
            )
        alert = OrganizationAlert.objects.create(
            organization=organization,
            threshold_type=threshold_type,
            threshold=threshold,
            notify=notify,
        )
        chosen = list(admins) if notify == Recipients.SPECIFIC_ADMINS else []
        if chosen:
            alert.admins.add(*chosen)  # a new alert has none to replace
        if not fire_if_already_exceeded:
            _quiet_if_already_passed(alert)
        audit_record(
            organization=organization,
            action="alert.created",
            target_type="organization_alert",
            target_id=alert.pk,
            after=_alert_snapshot(alert, chosen),
        )
        alerts_evaluate_organization(organization=organization)
    return alert


def _quiet_if_already_passed(alert: OrganizationAlert) -> None:
    organization = alert.organization
    period = organization_period(organization, timezone.now())
    threshold = threshold_credits(alert, period.allowance(organization.credit_allowance))
    if (
        threshold is not None
        and organization_used(organization=organization, period=period) >= threshold
    ):
        alert.quiet_period_start = period.start
        alert.save(update_fields=["quiet_period_start"])


@retry_on_conflict
def alert_update(
    *,
    alert: OrganizationAlert,
    threshold_type: str | None = None,
    threshold: Decimal | None = None,
    notify: str | None = None,
    admins: Sequence[Membership] | None = None,
) -> OrganizationAlert:
    """Edit an alert. A new threshold re-arms it: if usage is already past
    the new threshold it fires at once.

    The alert is read again under its row lock and validated as it then
    stands: `alert` may have been loaded before a concurrent edit (whose
    re-arm would be lost, and whose change the audit would not see) or a
    delete (404, rather than writing the alert back).
    """
    with transaction.atomic():
        if not _lock_alert(alert):
            raise NotFound(f"No alert {alert.pk} in this organization.", code="alert_not_found")
        new_type = threshold_type or alert.threshold_type
        new_threshold = threshold if threshold is not None else alert.threshold
        new_notify = notify or alert.notify
        old_admins = list(alert.admins.all())
        new_admins = list(admins) if admins is not None else old_admins
        validate_threshold(new_type, new_threshold)
        validate_recipients(alert.organization, new_notify, new_admins)
        before = _alert_snapshot(alert, old_admins)
        changed = ["threshold_type", "threshold", "notify", "updated_at"]
        if new_type != alert.threshold_type or new_threshold != alert.threshold:
            alert.generation += 1
            alert.quiet_period_start = None
            changed += ["generation", "quiet_period_start"]
        alert.threshold_type, alert.threshold, alert.notify = new_type, new_threshold, new_notify
        alert.save(update_fields=changed)
        chosen = new_admins if new_notify == Recipients.SPECIFIC_ADMINS else []
        alert.admins.set(chosen)
        audit_record(
            organization=alert.organization,
            action="alert.updated",
            target_type="organization_alert",
            target_id=alert.pk,
            before=before,
            after=_alert_snapshot(alert, chosen),
        )
        alerts_evaluate_organization(organization=alert.organization)
    return alert


@retry_on_conflict
def alert_delete(*, alert: OrganizationAlert) -> None:
    """Delete an alert, auditing it as it stands under its row lock (an edit
    may have changed it since `alert` was loaded). One deleted meanwhile is
    left as it is: deleted once, audited once.
    """
    with transaction.atomic():
        if not _lock_alert(alert):
            return
        audit_record(
            organization=alert.organization,
            action="alert.deleted",
            target_type="organization_alert",
            target_id=alert.pk,
            before=_alert_snapshot(alert, list(alert.admins.all())),
        )
        alert.delete()


def _lock_alert(alert: OrganizationAlert) -> bool:
    """Lock the alert's row and load it afresh into `alert` (every field, and
    no admins cached from before); False if a concurrent delete removed it.
    """
    try:
        alert.refresh_from_db(from_queryset=OrganizationAlert.objects.select_for_update())
    except OrganizationAlert.DoesNotExist:
        return False
    return True


def _alert_snapshot(alert: OrganizationAlert, admins: Sequence[Membership]) -> dict[str, Any]:
    """An alert as the audit trail keeps it."""
    return {
        "threshold_type": alert.threshold_type,
        "threshold": format_credits(Decimal(alert.threshold)),
        "notify": alert.notify,
        "admins": sorted(admin.external_id for admin in admins),
    }


def _user_alert_policy_snapshot(
    policy: UserAlertPolicy, admins: Sequence[Membership]
) -> dict[str, Any]:
    return {
        "enabled": policy.enabled,
        "threshold": format_credits(Decimal(policy.threshold))
        if policy.threshold is not None
        else None,
        "notify_user": policy.notify_user,
        "admins": sorted(admin.external_id for admin in admins),
        "quiet_period_start": policy.quiet_period_start.isoformat()
        if policy.quiet_period_start
        else None,
    }


def validate_user_alert_recipients(
    *, enabled: bool, notify_user: bool, admins: Sequence[Membership]
) -> None:
    """An enabled policy must tell someone: it would otherwise record firings
    that nobody hears of.
    """
    if enabled and not notify_user and not any(m.role == Role.ADMIN for m in admins):
        raise InvalidInput(
            "Choose at least one admin to notify, or notify the member: "
            "as it stands these alerts would tell nobody.",
            code="nobody_to_notify",
            field="admins",
        )


def user_alert_policy_get(*, organization: Organization) -> UserAlertPolicy:
    policy = UserAlertPolicy.objects.filter(organization=organization).first()
    return policy or UserAlertPolicy(organization=organization)


def user_alert_policy_update(
    *,
    organization: Organization,
    enabled: bool | None = None,
    threshold: Decimal | None = None,
    clear_threshold: bool = False,
    notify_user: bool | None = None,
    admins: Sequence[Membership] | None = None,
    fire_if_already_exceeded: bool | None = None,
) -> UserAlertPolicy:
    """Change the per-user alert policy; a new threshold re-arms it.

    Members already past the threshold who have not been told are told at
    once, unless `fire_if_already_exceeded` is False: then they are not told
    this period, while a member who crosses later is. None keeps the choice
    made before, except that a new threshold notifies at once (as an edited
    organization alert does). An enabled policy must tell someone.
    """
    if threshold is not None and threshold <= 0:
        raise InvalidInput(
            "The threshold must be greater than 0.", code="invalid_threshold", field="threshold"
        )
    if admins is not None:
        validate_admins(organization=organization, admins=admins)
    with transaction.atomic():
        policy, created = UserAlertPolicy.objects.select_for_update().get_or_create(
            organization=organization
        )
        old_admins = [] if created else list(policy.admins.all())
        before = _user_alert_policy_snapshot(policy, old_admins)
        new_threshold = (
            None if clear_threshold else (threshold if threshold is not None else policy.threshold)
        )
        new_enabled = enabled if enabled is not None else policy.enabled
        if new_enabled and new_threshold is None:
            raise InvalidInput(
                "Set a threshold to turn per-user alerts on.",
                code="threshold_required",
                field="threshold",
            )
        new_notify_user = notify_user if notify_user is not None else policy.notify_user
        validate_user_alert_recipients(
            enabled=new_enabled,
            notify_user=new_notify_user,
            admins=old_admins if admins is None else admins,
        )
        threshold_changed = new_threshold != policy.threshold
        if threshold_changed:
            policy.generation += 1
        if fire_if_already_exceeded is None and threshold_changed:
            fire_if_already_exceeded = True
        if fire_if_already_exceeded is not None:
            policy.quiet_period_start = (
                None
                if fire_if_already_exceeded
                else organization_period(organization, timezone.now()).start
            )
        policy.threshold = new_threshold
        policy.enabled = new_enabled
        policy.notify_user = new_notify_user
        policy.save()
        if admins is not None:
            policy.admins.set(admins)
        audit_record(
            organization=organization,
            action="user_alert_policy.updated",
            target_type="user_alert_policy",
            target_id=policy.pk,
            before=before,
            after=_user_alert_policy_snapshot(policy, old_admins if admins is None else admins),
        )
        alerts_evaluate_organization(organization=organization)
    return policy
