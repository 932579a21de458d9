"""Writes of the billing app: recording usage and the consume/check gate.

The gate's rule (SPEC §3) is `gate_decide`; `usage_check` applies it to the
totals as they stand, and `usage_consume` applies it again inside the
database, atomically with the write (see billing/ledger.py).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.audit import audit_record
from accounts.models import Membership, Organization
from accounts.selectors import member_ids_by_external_id, validate_admins
from alerts.services import MemberChange, UsageChange, alerts_evaluate_organization, alerts_on_usage
from billing import ledger
from billing.models import (
    DEFAULT_METER,
    EXCLUDABLE_SOURCES,
    ConsumeAnswer,
    CustomLimit,
    MemberUsage,
    Source,
    SourceUsage,
    UserLimitPolicy,
)
from billing.periods import Period, organization_period
from billing.selectors import LimitRules, limit_rules_get, member_usage_get, organization_used
from config.credits import credits_field, format_credits, readable_credits
from config.dbretry import retry_on_conflict
from config.errors import Conflict, InvalidInput

USER_LIMIT_REACHED = "user_limit_reached"
ORGANIZATION_CREDITS_EXHAUSTED = "organization_credits_exhausted"
MAX_FUTURE_SKEW = timedelta(minutes=5)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Decision:
    """The gate's answer. `used`/`limit` are the member's counted usage and
    limit, or, when the organization is what refuses, its usage and allowance.
    """

    allowed: bool
    reason: str | None
    used: Decimal
    limit: Decimal | None
    resets_at: datetime
    message: str

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else max(self.limit - self.used, ZERO)

    def as_answer(self) -> dict[str, Any]:
        """The JSON answer of the API (and what a repeated key replays)."""
        answer: dict[str, Any] = {"allowed": self.allowed}
        if not self.allowed:
            answer |= {"reason": self.reason, "message": self.message}
        answer |= {
            "used": format_credits(self.used),
            "limit": None if self.limit is None else format_credits(self.limit),
        }
        if self.allowed:
            answer["remaining"] = None if self.remaining is None else format_credits(self.remaining)
        answer["resets_at"] = self.resets_at.isoformat().replace("+00:00", "Z")
        return answer

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Decision:
        resets_at = parse_datetime(answer["resets_at"])
        assert resets_at is not None
        return cls(
            allowed=answer["allowed"],
            reason=answer.get("reason"),
            used=Decimal(answer["used"]),
            limit=None if answer["limit"] is None else Decimal(answer["limit"]),
            resets_at=resets_at,
            message=answer.get("message", ""),
        )


def _day(moment: datetime) -> str:
    return f"{moment:%B} {moment.day}, {moment.year}"


def gate_decide(
    *,
    cost: Decimal,
    counts: bool,
    member_counted: Decimal,
    member_limit: Decimal | None,
    organization_used_now: Decimal,
    allowance: Decimal | None,
    block_when_exhausted: bool,
    period: Period,
) -> Decision:
    """SPEC §3: allowed iff (the source is excluded, or the member has no limit,
    or counted + cost <= limit) and (the organization does not block, or has
    no allowance, or its usage + cost <= allowance). The member's limit is
    the reason given when both refuse. `used` is as it stands, before `cost`.
    """
    if counts and member_limit is not None and member_counted + cost > member_limit:
        return Decision(
            allowed=False,
            reason=USER_LIMIT_REACHED,
            used=member_counted,
            limit=member_limit,
            resets_at=period.end,
            message=(
                f"You have used {readable_credits(member_counted)} of your "
                f"{readable_credits(member_limit)} credit limit for this billing period. "
                f"It resets on {_day(period.end)}."
            ),
        )
    if block_when_exhausted and allowance is not None and organization_used_now + cost > allowance:
        return Decision(
            allowed=False,
            reason=ORGANIZATION_CREDITS_EXHAUSTED,
            used=organization_used_now,
            limit=allowance,
            resets_at=period.end,
            message=(
                f"Your organization has used {readable_credits(organization_used_now)} of its "
                f"{readable_credits(allowance)} credits for this billing period. "
                f"Credits reset on {_day(period.end)}."
            ),
        )
    return Decision(
        allowed=True,
        reason=None,
        used=member_counted,
        limit=member_limit,
        resets_at=period.end,
        message="",
    )


def fingerprint(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _consume_fingerprint(*, membership: Membership, credits: Decimal, source: str) -> str:
    return fingerprint(
        {
            "op": "consume",
            "user": membership.pk,
            "credits": format_credits(credits),
            "source": source,
        }
    )


def _key_reused(key: str, *, field_name: str = "idempotency_key") -> Conflict:
    return Conflict(
        f"The idempotency key {key!r} was already used with a different request.",
        code="idempotency_key_reused",
        field=field_name,
    )


def usage_check(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str = Source.ASSISTANT,
) -> Decision:
    """The gate's decision for spending `credits` now, without recording anything."""
    return _decide_on_current_totals(
        organization=organization,
        membership=membership,
        credits=credits,
        source=source,
        period=organization_period(organization, timezone.now()),
        rules=limit_rules_get(organization=organization, membership_ids=[membership.pk]),
    )


def _decide_on_current_totals(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    period: Period,
    rules: LimitRules,
) -> Decision:
    _, counted = member_usage_get(membership=membership, period=period)
    return gate_decide(
        cost=credits,
        counts=rules.counts(source),
        member_counted=counted,
        member_limit=rules.limit_for(membership.pk),
        organization_used_now=organization_used(organization=organization, period=period),
        allowance=period.allowance(organization.credit_allowance),
        block_when_exhausted=organization.block_when_exhausted,
        period=period,
    )


@dataclass(frozen=True)
class ConsumeResult:
    decision: Decision
    replayed: bool = False


@retry_on_conflict
def usage_consume(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str = Source.ASSISTANT,
    idempotency_key: str | None = None,
) -> ConsumeResult:
    """Spend `credits` if the gate allows it, recording the usage in the same
    transaction. A repeated key gets the first answer back.

    The key is taken first, in the ledger, as ingest takes its keys before
    any total (the lock order of billing/ledger.py): a key ingest or another
    consume already used ends the transaction before it locks anything else,
    and a refusal deletes its ledger row again as it records its answer.
    """
    key = idempotency_key or f"consume-{uuid.uuid4()}"
    request_fingerprint = _consume_fingerprint(
        membership=membership, credits=credits, source=source
    )
    now = timezone.now()
    period = organization_period(organization, now)
    rules = limit_rules_get(organization=organization, membership_ids=[membership.pk])
    try:
        with transaction.atomic():
            _take_event_key(
                organization=organization,
                membership=membership,
                credits=credits,
                source=source,
                key=key,
                fingerprint=request_fingerprint,
                period=period,
                now=now,
            )
            decision = _consume(
                organization=organization,
                membership=membership,
                credits=credits,
                source=source,
                rules=rules,
                period=period,
                now=now,
            )
            _record_consume_answer(
                organization=organization,
                key=key,
                fingerprint=request_fingerprint,
                decision=decision,
                now=now,
            )
    except _KeyTaken:
        return ConsumeResult(
            _replay_consume(organization=organization, key=key, fingerprint=request_fingerprint),
            replayed=True,
        )
    return ConsumeResult(decision)


class _KeyTaken(Exception):
    """An earlier request (a consume, or ingest) used this key: what this one
    wrote is rolled back, and the first answer is replayed (or 409).
    """


def _take_event_key(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    key: str,
    fingerprint: str,
    period: Period,
    now: datetime,
) -> None:
    """Insert the consume's ledger row, first of the transaction's writes.

    A concurrent request with the same key (a consume, or ingest: they share
    one namespace) waits here until the first one ends, holding no other
    lock; a key already in the ledger ends this transaction at once.
    """
    inserted = ledger.insert_events(
        organization_id=organization.pk,
        events=[
            ledger.NewEvent(
                membership_id=membership.pk,
                meter=DEFAULT_METER,
                credits=credits,
                source=source,
                timestamp=now,
                period_start=period.start,
                idempotency_key=key,
                fingerprint=fingerprint,
                properties={},
            )
        ],
        now=now,
    )
    if key not in inserted:
        raise _KeyTaken


def _record_consume_answer(
    *, organization: Organization, key: str, fingerprint: str, decision: Decision, now: datetime
) -> None:
    """Record the answer under its key, last of the transaction's writes;
    a refusal takes back its ledger row in the same statement.

    The key's unique constraint is what makes a repeated key safe even for
    a refusal, which leaves no ledger row: a concurrent request with the
    same key waits here until the first one commits, then finds the key
    taken and replays the first answer; the work it did is rolled back.
    """
    take_back = ""
    take_back_params: list[Any] = []
    if not decision.allowed:
        if connection.vendor == "postgresql":
            take_back = (
                f"WITH refused AS (DELETE FROM {ledger.USAGE_EVENT}"
                " WHERE organization_id = %s AND idempotency_key = %s)"
            )
            take_back_params = [organization.pk, key]
        else:  # SQLite (the local demo database) has no DELETE inside WITH
            ledger.delete_event(organization_id=organization.pk, idempotency_key=key)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            {take_back}
            INSERT INTO {ConsumeAnswer._meta.db_table}
                (organization_id, idempotency_key, fingerprint, status_code, body, created_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (organization_id, idempotency_key) DO NOTHING
            RETURNING id
            """,
            [
                *take_back_params,
                organization.pk,
                key,
                fingerprint,
                200 if decision.allowed else 402,
                connection.ops.adapt_json_value(decision.as_answer(), json.JSONEncoder),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )
        if cursor.fetchone() is None:
            raise _KeyTaken


def _replay_consume(*, organization: Organization, key: str, fingerprint: str) -> Decision:
    """The first answer to this key; 409 if it was used for something else
    (another consume's body, or an ingested event).
    """
    answer = ConsumeAnswer.objects.filter(organization=organization, idempotency_key=key).first()
    if answer is None:
        recorded = ledger.fingerprints_of(organization_id=organization.pk, keys=[key])
        if recorded.get(key) == fingerprint:
            # This very consume, allowed so long ago that its answer was pruned.
            raise Conflict(
                f"The idempotency key {key!r} was used more than "
                f"{settings.IDEMPOTENCY_RETENTION_DAYS} days ago: its usage was recorded "
                "once, and its answer is no longer kept.",
                code="idempotency_key_expired",
                field="idempotency_key",
            )
    if answer is None or answer.fingerprint != fingerprint:
        raise _key_reused(key)
    return Decision.from_answer(answer.body)


def _consume(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    rules: LimitRules,
    period: Period,
    now: datetime,
) -> Decision:
    counts = rules.counts(source)
    limit = rules.limit_for(membership.pk)
    increment = ledger.MemberIncrement(
        membership_id=membership.pk,
        period_start=period.start,
        used=credits,
        counted=credits if counts else ZERO,
    )
    member = ledger.add_to_member(
        organization_id=organization.pk,
        increment=increment,
        limit=limit,
        enforce_limit=counts,
        now=now,
    )
    if member is None:
        return _refusal(
            organization=organization,
            membership=membership,
            credits=credits,
            source=source,
            period=period,
            rules=rules,
        )
    organization_total = ledger.add_to_organization(
        organization_id=organization.pk,
        period_start=period.start,
        credits=credits,
        allowance=period.allowance(organization.credit_allowance),
        enforce_allowance=organization.block_when_exhausted,
    )
    if organization_total is None:
        ledger.undo_member_increment(increment=increment, now=now)
        return _refusal(
            organization=organization,
            membership=membership,
            credits=credits,
            source=source,
            period=period,
            rules=rules,
        )
    # Only once both caps have let it through, so a refusal has nothing to undo here.
    ledger.add_to_days(
        organization_id=organization.pk, credits_by_day={ledger.utc_day(now): credits}
    )
    ledger.add_to_sources(
        organization_id=organization.pk, increments={(membership.pk, period.start, source): credits}
    )
    alerts_on_usage(
        UsageChange(
            organization=organization,
            period=period,
            used_before=organization_total - credits,
            used_after=organization_total,
            members=[
                MemberChange(
                    membership_id=membership.pk,
                    used_before=member.used - credits,
                    used_after=member.used,
                    counted_after=member.counted,
                    limit=limit,
                    limit_reached_now=member.limit_reached_at == now,
                )
            ],
        )
    )
    return Decision(
        allowed=True,
        reason=None,
        used=member.counted,
        limit=limit,
        resets_at=period.end,
        message="",
    )


def _refusal(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    period: Period,
    rules: LimitRules,
) -> Decision:
    """Why the database refused: the same rule, applied to the totals now."""
    decision = _decide_on_current_totals(
        organization=organization,
        membership=membership,
        credits=credits,
        source=source,
        period=period,
        rules=rules,
    )
    assert not decision.allowed, "the database refused what the rule allows"
    return decision


@dataclass(frozen=True)
class UsageInput:
    """One event to ingest, as the API or an in-process caller gives it."""

    idempotency_key: str
    credits: Decimal
    user: str | None = None
    source: str = Source.ASSISTANT
    meter: str = DEFAULT_METER
    timestamp: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        return fingerprint(
            {
                "op": "usage",
                "user": self.user,
                "credits": format_credits(self.credits),
                "source": self.source,
                "meter": self.meter,
                "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
                "properties": self.properties,
            }
        )


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


@retry_on_conflict
def usage_ingest(*, organization: Organization, events: Sequence[UsageInput]) -> IngestResult:
    """Record usage that already happened. Never refused for being over a
    limit. The batch is all or nothing: any invalid event refuses it whole.
    A key seen before with the same event is a duplicate and not counted again.
    """
    now = timezone.now()
    member_ids = _member_ids_by_external_id(organization, events)
    fingerprints = [event.fingerprint() for event in events]
    new_events = _new_events(organization, events, fingerprints, member_ids, now)
    _refuse_consume_keys(organization, events)
    with transaction.atomic():
        inserted = ledger.insert_events(organization_id=organization.pk, events=new_events, now=now)
        if len(inserted) < len(new_events):
            _refuse_reused_keys(organization, events, fingerprints, inserted)
        recorded = [event for event in new_events if event.idempotency_key in inserted]
        _add_to_totals(organization, recorded, now)
    return IngestResult(accepted=len(recorded), duplicates=len(events) - len(recorded))


def _member_ids_by_external_id(
    organization: Organization, events: Sequence[UsageInput]
) -> dict[str, int]:
    external_ids = {event.user for event in events if event.user is not None}
    if not external_ids:
        return {}
    found = member_ids_by_external_id(organization=organization, external_ids=list(external_ids))
    for index, event in enumerate(events):
        if event.user is not None and event.user not in found:
            raise InvalidInput(
                f"events[{index}].user: no member {event.user!r} in this organization.",
                code="unknown_user",
                field=f"events[{index}].user",
            )
    return found


def _new_events(
    organization: Organization,
    events: Sequence[UsageInput],
    fingerprints: list[str],
    member_ids: dict[str, int],
    now: datetime,
) -> list[ledger.NewEvent]:
    """Validate the batch; the first of each key in it (a key repeated in one
    batch is a duplicate, as it would be in the next).
    """
    new_events: dict[str, ledger.NewEvent] = {}
    for index, (event, event_fingerprint) in enumerate(zip(events, fingerprints, strict=True)):
        key = event.idempotency_key
        if key in new_events:
            if new_events[key].fingerprint != event_fingerprint:
                raise _key_reused(key, field_name=f"events[{index}].idempotency_key")
            continue
        timestamp = event.timestamp or now
        if timestamp > now + MAX_FUTURE_SKEW:
            raise InvalidInput(
                f"events[{index}].timestamp: more than 5 minutes in the future.",
                code="timestamp_in_future",
                field=f"events[{index}].timestamp",
            )
        new_events[key] = ledger.NewEvent(
            membership_id=member_ids[event.user] if event.user is not None else None,
            meter=event.meter,
            credits=event.credits,
            source=event.source,
            timestamp=timestamp,
            period_start=organization_period(organization, timestamp).start,
            idempotency_key=key,
            fingerprint=event_fingerprint,
            properties=event.properties,
        )
    return list(new_events.values())


def _refuse_consume_keys(organization: Organization, events: Sequence[UsageInput]) -> None:
    """409 for the first event whose key a consume took (a refused consume
    leaves no ledger row, so the ledger's own constraint cannot tell).
    """
    taken = ledger.consume_keys_among(
        organization_id=organization.pk, keys=[event.idempotency_key for event in events]
    )
    for index, event in enumerate(events):
        if event.idempotency_key in taken:
            raise _key_reused(event.idempotency_key, field_name=f"events[{index}].idempotency_key")


def _refuse_reused_keys(
    organization: Organization,
    events: Sequence[UsageInput],
    fingerprints: list[str],
    inserted: set[str],
) -> None:
    """The ledger already held some keys of the batch: duplicates if they
    came with the same event, else 409 for the first one (which rolls back
    the batch's insert).
    """
    repeated = {event.idempotency_key for event in events} - inserted
    stored = ledger.fingerprints_of(organization_id=organization.pk, keys=list(repeated))
    for index, (event, event_fingerprint) in enumerate(zip(events, fingerprints, strict=True)):
        key = event.idempotency_key
        if key in stored and stored[key] != event_fingerprint:
            raise _key_reused(key, field_name=f"events[{index}].idempotency_key")


def _add_to_totals(
    organization: Organization, events: Sequence[ledger.NewEvent], now: datetime
) -> None:
    """Group the events and move every total they touch: a constant number of
    statements, whatever the number of events.
    """
    counted_events = [event for event in events if event.meter == DEFAULT_METER]
    if not counted_events:
        return
    member_ids = {
        event.membership_id for event in counted_events if event.membership_id is not None
    }
    rules = limit_rules_get(organization=organization, membership_ids=member_ids)
    member_used: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    member_counted: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    by_period: dict[datetime, Decimal] = defaultdict(Decimal)
    by_source: dict[tuple[int | None, datetime, str], Decimal] = defaultdict(Decimal)
    by_day: dict[date, Decimal] = defaultdict(Decimal)
    for event in counted_events:
        by_period[event.period_start] += event.credits
        by_day[ledger.utc_day(event.timestamp)] += event.credits
        by_source[(event.membership_id, event.period_start, event.source)] += event.credits
        if event.membership_id is not None:
            member_key = (event.membership_id, event.period_start)
            member_used[member_key] += event.credits
            if rules.counts(event.source):
                member_counted[member_key] += event.credits
    members = ledger.add_to_members(
        organization_id=organization.pk,
        increments=[
            ledger.MemberIncrement(
                membership_id=membership_id,
                period_start=period_start,
                used=used,
                counted=member_counted[(membership_id, period_start)],
            )
            for (membership_id, period_start), used in member_used.items()
        ],
    )
    organization_totals = ledger.add_to_organization_periods(
        organization_id=organization.pk, credits_by_period=by_period
    )
    ledger.add_to_days(organization_id=organization.pk, credits_by_day=by_day)
    ledger.add_to_sources(organization_id=organization.pk, increments=by_source)
    reached = {
        member.id
        for member in members
        if member.limit_reached_at is None
        and (limit := rules.limit_for(member.membership_id)) is not None
        and member.counted >= limit
    }
    if reached:
        ledger.mark_limits_reached(member_usage_ids=list(reached), now=now)
    for period_start, used_after in organization_totals.items():
        alerts_on_usage(
            UsageChange(
                organization=organization,
                period=organization_period(organization, period_start),
                used_before=used_after - by_period[period_start],
                used_after=used_after,
                members=[
                    MemberChange(
                        membership_id=member.membership_id,
                        used_before=member.used - member_used[(member.membership_id, period_start)],
                        used_after=member.used,
                        counted_after=member.counted,
                        limit=rules.limit_for(member.membership_id),
                        limit_reached_now=member.id in reached,
                    )
                    for member in members
                    if member.period_start == period_start
                ],
            )
        )


@retry_on_conflict
def limit_policy_update(
    *,
    organization: Organization,
    enabled: bool | None = None,
    default_limit: Decimal | None = None,
    clear_default_limit: bool = False,
    admins: Sequence[Membership] | None = None,
    excluded_sources: Sequence[str] | None = None,
) -> UserLimitPolicy:
    """Change the per-user limits policy; what is not given stays as it is."""
    if excluded_sources is not None:
        unknown = set(excluded_sources) - set(EXCLUDABLE_SOURCES)
        if unknown:
            raise InvalidInput(
                f"Only {', '.join(EXCLUDABLE_SOURCES)} can be excluded, "
                f"not {', '.join(sorted(unknown))}.",
                code="invalid_excluded_sources",
                field="excluded_sources",
            )
    if admins is not None:
        validate_admins(organization=organization, admins=admins)
    with transaction.atomic():
        policy, created = UserLimitPolicy.objects.select_for_update().get_or_create(
            organization=organization
        )
        old_admins = [] if created else list(policy.admins.all())
        before = _limit_policy_snapshot(policy, old_admins)
        exclusions_changed = excluded_sources is not None and set(excluded_sources) != set(
            policy.excluded_sources
        )
        if enabled is not None:
            policy.enabled = enabled
        if clear_default_limit or default_limit is not None:
            policy.default_limit = None if clear_default_limit else default_limit
        if excluded_sources is not None:
            policy.excluded_sources = sorted(set(excluded_sources))
        policy.save()
        if admins is not None:
            policy.admins.set(admins)
        audit_record(
            organization=organization,
            action="limit_policy.updated",
            target_type="user_limit_policy",
            target_id=policy.pk,
            before=before,
            after=_limit_policy_snapshot(policy, old_admins if admins is None else admins),
        )
        if exclusions_changed:
            _recount_members(organization=organization, policy=policy)
        _after_limits_change(organization)
    return policy


def _recount_members(*, organization: Organization, policy: UserLimitPolicy) -> None:
    """Counted usage is used minus the excluded sources: recompute it for this
    period from the per-source totals, after locking the members' rows so that
    no consume slips in between.
    """
    period = organization_period(organization, timezone.now())
    members = MemberUsage.objects.filter(organization=organization, period_start=period.start)
    list(members.select_for_update().order_by("membership_id").values_list("id", flat=True))
    excluded_used = (
        SourceUsage.objects.filter(
            membership_id=OuterRef("membership_id"),
            period_start=OuterRef("period_start"),
            source__in=policy.excluded_sources,
        )
        .values("membership_id")
        .annotate(total=Sum("used"))
        .values("total")
    )
    members.update(
        counted=F("used")
        - Coalesce(Subquery(excluded_used), Value(ZERO), output_field=credits_field())
    )


def _after_limits_change(organization: Organization) -> None:
    """Limits or exclusions changed: note who is now over budget, and fire."""
    period = organization_period(organization, timezone.now())
    _mark_members_over_budget(organization=organization, period=period)
    alerts_evaluate_organization(organization=organization)


def _mark_members_over_budget(*, organization: Organization, period: Period) -> None:
    """After a limit or exclusion change, note when members are now over budget."""
    candidates = list(
        MemberUsage.objects.filter(
            organization=organization,
            period_start=period.start,
            limit_reached_at__isnull=True,
            counted__gt=0,
        ).values_list("id", "membership_id", "counted")
    )
    if not candidates:
        return
    rules = limit_rules_get(organization=organization, membership_ids=[m for _, m, _ in candidates])
    reached = [
        row_id
        for row_id, membership_id, counted in candidates
        if (limit := rules.limit_for(membership_id)) is not None and counted >= limit
    ]
    if reached:
        ledger.mark_limits_reached(member_usage_ids=reached, now=timezone.now())


@retry_on_conflict
def custom_limit_set(
    *, organization: Organization, membership: Membership, limit: Decimal | None
) -> CustomLimit:
    """Set a member's own limit (None: unlimited), overriding the default."""
    with transaction.atomic():
        previous = CustomLimit.objects.select_for_update().filter(membership=membership).first()
        before = _custom_limit_snapshot(membership, previous.limit) if previous else None
        custom, _ = CustomLimit.objects.update_or_create(
            membership=membership, defaults={"organization": organization, "limit": limit}
        )
        audit_record(
            organization=organization,
            action="custom_limit.set",
            target_type="custom_limit",
            target_id=membership.external_id,
            before=before,
            after=_custom_limit_snapshot(membership, limit),
        )
        _after_limits_change(organization)
    return custom


@retry_on_conflict
def custom_limit_delete(*, custom_limit: CustomLimit) -> None:
    with transaction.atomic():
        organization = custom_limit.organization
        audit_record(
            organization=organization,
            action="custom_limit.deleted",
            target_type="custom_limit",
            target_id=custom_limit.membership.external_id,
            before=_custom_limit_snapshot(custom_limit.membership, custom_limit.limit),
        )
        custom_limit.delete()
        _after_limits_change(organization)


def _limit_policy_snapshot(policy: UserLimitPolicy, admins: Sequence[Membership]) -> dict[str, Any]:
    return {
        "enabled": policy.enabled,
        "default_limit": (
            format_credits(Decimal(policy.default_limit))
            if policy.default_limit is not None
            else None
        ),
        "excluded_sources": sorted(policy.excluded_sources),
        "admins": sorted(admin.external_id for admin in admins),
    }


def _custom_limit_snapshot(membership: Membership, limit: Decimal | None) -> dict[str, Any]:
    """`limit` None: unlimited."""
    return {
        "user": membership.external_id,
        "limit": format_credits(Decimal(limit)) if limit is not None else None,
    }
