"""Ingest: record usage that already happened (SPEC §2), in batches.

Never refused for being over a limit. The batch is validated whole before
anything is written; then one transaction inserts the new events in the
ledger (a key seen before is a duplicate), moves every total they touch in
a constant number of statements (billing/ledger.py), notes members who
reached their limit, and fires the alerts each period's totals crossed
(alerts/services/rules.py). At the alerts level for the same reason as
consume (alerts/services/consume.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from accounts.selectors import member_ids_by_external_id
from alerts.services.credits import BalanceChange, balance_changed, draw_beyond_allowance
from alerts.services.invoicing import money_on_usage
from alerts.services.rules import MemberChange, UsageChange, alerts_on_usage
from billing import event_ledger, holds, ledger
from billing.idempotency import fingerprint, key_reused
from billing.meters import (
    MeterEvent,
    add_to_meters,
    distinct_value,
    meter_quantity,
    meters_by_key,
)
from billing.models import (
    DEFAULT_METER,
    Aggregation,
    Meter,
    Source,
)
from billing.periods import organization_period
from billing.rules import ZERO, over_budget
from billing.selectors import limit_rules_get
from config.credits import format_credits
from config.dbretry import retry_on_conflict
from config.errors import InvalidInput

MAX_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class UsageInput:
    """One event to ingest, as the API or an in-process caller gives it."""

    idempotency_key: str
    credits: Decimal | None
    user: str | None = None
    source: str = Source.ASSISTANT
    meter: str = DEFAULT_METER
    timestamp: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    quantity: Decimal | None = None

    def fingerprint(self) -> str:
        request: dict[str, Any] = {
            "op": "usage",
            "user": self.user,
            "credits": None if self.credits is None else format_credits(self.credits),
            "source": self.source,
            "meter": self.meter,
            "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
            "properties": self.properties,
        }
        if self.quantity is not None:  # so that credit events keep their fingerprints
            request["quantity"] = format_credits(self.quantity)
        return fingerprint(request)


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
    meters = meters_by_key({event.meter for event in events} - {DEFAULT_METER})
    new_events = _new_events(organization, events, fingerprints, member_ids, meters, now)
    _refuse_consume_keys(organization, events)
    with transaction.atomic():
        inserted = event_ledger.insert_events(
            organization_id=organization.pk, events=[new for new, _ in new_events], now=now
        )
        if len(inserted) < len(new_events):
            _refuse_reused_keys(organization, events, fingerprints, inserted)
        recorded = [event for event in new_events if event[0].idempotency_key in inserted]
        add_to_totals(organization, recorded, now)
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
    meters: dict[str, Meter],
    now: datetime,
) -> list[tuple[event_ledger.NewEvent, MeterEvent | None]]:
    """Validate the batch; the first of each key in it (a key repeated in one
    batch is a duplicate, as it would be in the next), with what its meter
    counts when it is not credits.
    """
    new_events: dict[str, tuple[event_ledger.NewEvent, MeterEvent | None]] = {}
    for index, (event, event_fingerprint) in enumerate(zip(events, fingerprints, strict=True)):
        key = event.idempotency_key
        if key in new_events:
            if new_events[key][0].fingerprint != event_fingerprint:
                raise key_reused(key, field_name=f"events[{index}].idempotency_key")
            continue
        timestamp = event.timestamp or now
        if timestamp > now + MAX_FUTURE_SKEW:
            raise InvalidInput(
                f"events[{index}].timestamp: more than 5 minutes in the future.",
                code="timestamp_in_future",
                field=f"events[{index}].timestamp",
            )
        membership_id = member_ids[event.user] if event.user is not None else None
        period_start = organization_period(organization, timestamp).start
        quantity, credits, metered = _metered(
            event, index, meters, membership_id, period_start, timestamp
        )
        new_events[key] = (
            event_ledger.NewEvent(
                membership_id=membership_id,
                meter=event.meter,
                credits=credits,
                quantity=quantity,
                source=event.source,
                timestamp=timestamp,
                period_start=period_start,
                idempotency_key=key,
                fingerprint=event_fingerprint,
                properties=event.properties,
            ),
            metered,
        )
    return list(new_events.values())


def _metered(
    event: UsageInput,
    index: int,
    meters: dict[str, Meter],
    membership_id: int | None,
    period_start: datetime,
    timestamp: datetime,
) -> tuple[Decimal | None, Decimal, MeterEvent | None]:
    """An event's quantity, credits and meter totals (SPEC §10): a credits
    event gives its credits; another meter's may give them, else they are
    its quantity at the meter's price.
    """
    if event.meter == DEFAULT_METER:
        if event.quantity is not None:
            raise InvalidInput(
                f"events[{index}].quantity: only for a meter other than credits; "
                "a credits event gives its credits.",
                code="invalid_quantity",
                field=f"events[{index}].quantity",
            )
        if event.credits is None:
            raise InvalidInput(
                f"events[{index}].credits: is required for the credits meter.",
                code="credits_required",
                field=f"events[{index}].credits",
            )
        if event.credits == 0:
            raise InvalidInput(
                f"events[{index}].credits: must be greater than 0.",
                code="invalid",
                field=f"events[{index}].credits",
            )
        return None, event.credits, None
    meter = meters.get(event.meter)
    if meter is None:
        raise InvalidInput(
            f"events[{index}].meter: no meter {event.meter!r}.",
            code="unknown_meter",
            field=f"events[{index}].meter",
        )
    quantity, credits = meter_quantity(meter, event.quantity, event.credits, index)
    distinct = (
        distinct_value(meter, event.properties, f"events[{index}].properties")
        if meter.aggregation == Aggregation.UNIQUE_COUNT
        else None
    )
    return (
        quantity,
        credits,
        MeterEvent(
            meter=meter,
            membership_id=membership_id,
            period_start=period_start,
            day=ledger.utc_day(timestamp),
            quantity=quantity,
            distinct=distinct,
        ),
    )


def _refuse_consume_keys(organization: Organization, events: Sequence[UsageInput]) -> None:
    """409 for the first event whose key a consume took (a refused consume
    leaves no ledger row, so the ledger's own constraint cannot tell).
    """
    taken = event_ledger.consume_keys_among(
        organization_id=organization.pk, keys=[event.idempotency_key for event in events]
    )
    for index, event in enumerate(events):
        if event.idempotency_key in taken:
            raise key_reused(event.idempotency_key, field_name=f"events[{index}].idempotency_key")


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
    stored = event_ledger.fingerprints_of(organization_id=organization.pk, keys=list(repeated))
    for index, (event, event_fingerprint) in enumerate(zip(events, fingerprints, strict=True)):
        key = event.idempotency_key
        if key in stored and stored[key] != event_fingerprint:
            raise key_reused(key, field_name=f"events[{index}].idempotency_key")


def add_to_totals(
    organization: Organization,
    recorded: Sequence[tuple[event_ledger.NewEvent, MeterEvent | None]],
    now: datetime,
    released: Sequence[holds.ClosedHold] = (),
) -> None:
    """Group the events and move every total they touch: a constant number of
    statements, whatever the number of events. Every event's credits count,
    whatever its meter (0 moves the rows all the same: the organization's
    total row is the lock its meter rows are taken under). `released`: holds
    closed in this transaction (a settle, SPEC §13), whose held credits leave
    the same rows in the same statements.
    """
    if not recorded and not released:
        return
    counted_events = [event for event, _ in recorded]
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
    member_held = holds.member_releases(released)
    members = ledger.add_to_members(
        organization_id=organization.pk,
        increments=[
            ledger.MemberIncrement(
                membership_id=membership_id,
                period_start=period_start,
                used=member_used.get((membership_id, period_start), ZERO),
                counted=member_counted.get((membership_id, period_start), ZERO),
                held=member_held.get((membership_id, period_start), ZERO),
            )
            for membership_id, period_start in member_used.keys() | member_held.keys()
        ],
    )
    organization_totals = ledger.add_to_organization_periods(
        organization_id=organization.pk,
        credits_by_period=by_period,
        held_by_period=holds.organization_releases(released),
    )
    ledger.add_to_days_and_sources(
        organization_id=organization.pk, credits_by_day=by_day, by_source=by_source
    )
    reached = {
        member.id
        for member in members
        if member.limit_reached_at is None
        and over_budget(member.counted, rules.limit_for(member.membership_id))
    }
    if reached:
        ledger.mark_limits_reached(member_usage_ids=list(reached), now=now)
    meter_changes = add_to_meters(
        organization_id=organization.pk,
        events=[metered for _, metered in recorded if metered is not None],
    )
    balance = _draw_beyond_allowance(organization, organization_totals, by_period, now)
    for period_start, used_after in organization_totals.items():
        if period_start not in by_period:
            continue  # only held credits given back: no usage to evaluate
        period = organization_period(organization, period_start)
        money = money_on_usage(
            organization=organization,
            period=period,
            used_before=used_after - by_period[period_start],
            used_after=used_after,
            drawn=balance.drawn if balance is not None and balance.period == period else ZERO,
            now=now,
        )
        alerts_on_usage(
            UsageChange(
                organization=organization,
                period=period,
                used_before=used_after - by_period[period_start],
                used_after=used_after,
                money=money,
                members=[
                    MemberChange(
                        membership_id=member.membership_id,
                        used_before=member.used - member_used[(member.membership_id, period_start)],
                        used_after=member.used,
                        counted_before=member.counted
                        - member_counted[(member.membership_id, period_start)],
                        counted_after=member.counted,
                        limit=rules.limit_for(member.membership_id),
                    )
                    for member in members
                    if member.period_start == period_start
                    and (member.membership_id, period_start) in member_used
                ],
                meters=[change for change in meter_changes if change.period_start == period_start],
            )
        )
    if balance is not None:
        balance_changed(balance)


def _draw_beyond_allowance(
    organization: Organization,
    organization_totals: dict[datetime, Decimal],
    by_period: dict[datetime, Decimal],
    now: datetime,
) -> BalanceChange | None:
    """Draw from the grants the part of this period's usage that its allowance
    does not cover (never refused: what they do not cover is overage). Usage
    of past periods draws nothing: a later grant does not cover past overage.
    """
    if organization.credit_balance_kept_since is None:
        return None
    period = organization_period(organization, now)
    if period.start not in by_period:
        return None
    used_after, credits = organization_totals[period.start], by_period[period.start]
    return draw_beyond_allowance(
        organization=organization,
        period=period,
        used_before=used_after - credits,
        credits=credits,
        now=now,
        all_or_nothing=False,
    )
