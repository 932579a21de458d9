"""The SQL of holds (SPEC §13): closing them, and giving back what they held.

A hold's credits sit in the `held` totals of its period's rows (the
member's when it counts toward their limit, the organization's always),
which the gate adds to usage (billing/ledger.py's guards). They leave
them once: whoever closes the hold — settle, release, or expiry — does so
with one conditional UPDATE (`status = 'held'`), so of two racing closers
exactly one changes a row, and only that one gives the credits back.

Expiry is exact for the gate: every gate write of an organization first
expires its holds that are due (`expire_due`), in its own transaction, and
asks whether there are any in a statement it makes anyway
(`insert_event_noting_due_holds`), so it pays nothing when there are none.
The beat (alerts/services/holds.py) only tidies up after organizations
that make no write.

Lock order (billing/ledger.py's, with holds in second place): ledger keys,
then holds (by id), then member rows, then organization rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from billing import ledger
from billing.event_ledger import EVENT_COLUMNS, USAGE_EVENT, NewEvent, event_rows
from billing.models import CreditHold, HoldStatus
from billing.sqlvalues import credits_param, credits_result, moment_param, moment_result
from config import rawsql

HOLD = CreditHold._meta.db_table
ZERO = Decimal(0)

# Whether the organization (the first parameter) has holds past `expires_at`
# (the second) still marked held.
DUE = f"""
    SELECT 1 FROM {HOLD}
    WHERE organization_id = %s AND status = '{HoldStatus.HELD.value}' AND expires_at <= %s
"""


@dataclass(frozen=True)
class ClosedHold:
    """What a hold held, as its closer found it."""

    id: int
    membership_id: int | None
    period_start: datetime
    credits: Decimal
    counted: bool


_CLOSED_COLUMNS = "id, membership_id, period_start, credits, counted"


def _closed(row: Sequence[Any]) -> ClosedHold:
    return ClosedHold(
        id=row[0],
        membership_id=row[1],
        period_start=moment_result(row[2]),  # type: ignore[arg-type]
        credits=credits_result(row[3]),
        counted=bool(row[4]),
    )


def insert_event_noting_due_holds(
    *, organization_id: int, event: NewEvent, now: datetime
) -> tuple[bool, bool]:
    """Insert a consume's ledger row if its key is new (the first step of
    the lock order), and tell in the same statement whether the organization
    has holds due to expire: (inserted, holds due).
    """
    rows, params = event_rows(organization_id, [event], now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {USAGE_EVENT} {EVENT_COLUMNS} {rows}
            ON CONFLICT (organization_id, idempotency_key) DO NOTHING
            RETURNING EXISTS ({DUE})
            """,
            [*params, organization_id, moment_param(now)],
        )
        row = cursor.fetchone()
    return (True, bool(row[0])) if row else (False, False)


def expire_due(
    *, organization_id: int, now: datetime, member: tuple[int, datetime] | None = None
) -> list[ClosedHold]:
    """Expire the organization's holds that are due at `now` and give back
    what they held. `member` (membership id, period start): a member row the
    caller is about to take, locked here in its place in the lock order.
    """
    lock = "FOR UPDATE" if connection.features.has_select_for_update else ""
    due = rawsql.fetch_all(
        f"""
        SELECT id FROM {HOLD}
        WHERE organization_id = %s AND status = %s AND expires_at <= %s
        ORDER BY id {lock}
        """,
        [organization_id, HoldStatus.HELD.value, moment_param(now)],
    )
    if not due:
        return []
    condition, ids = rawsql.any_of("id", [hold_id for (hold_id,) in due])
    expired = [
        _closed(row)
        for row in rawsql.fetch_all(
            f"""
            UPDATE {HOLD} SET status = %s, closed_at = %s
            WHERE {condition} AND status = %s
            RETURNING {_CLOSED_COLUMNS}
            """,
            [HoldStatus.EXPIRED.value, moment_param(now), *ids, HoldStatus.HELD.value],
        )
    ]
    give_back(organization_id=organization_id, holds=expired, member=member)
    return expired


def close(
    *,
    organization_id: int,
    hold_id: int,
    status: str,
    now: datetime,
    settled_credits: Decimal | None = None,
) -> ClosedHold | None:
    """Settle or release a hold that is held and not yet due; None when it
    is not (already closed, or due: then expiry won).
    """
    rows = rawsql.fetch_all(
        f"""
        UPDATE {HOLD} SET status = %s, closed_at = %s, settled_credits = %s
        WHERE id = %s AND organization_id = %s AND status = %s AND expires_at > %s
        RETURNING {_CLOSED_COLUMNS}
        """,
        [
            status,
            moment_param(now),
            credits_param(settled_credits),
            hold_id,
            organization_id,
            HoldStatus.HELD.value,
            moment_param(now),
        ],
    )
    return _closed(rows[0]) if rows else None


def member_releases(holds: Iterable[ClosedHold]) -> dict[tuple[int, datetime], Decimal]:
    """What closed holds give back to members' limits, by (member, period):
    negative held credits.
    """
    released: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    for hold in holds:
        if hold.counted and hold.membership_id is not None:
            released[(hold.membership_id, hold.period_start)] -= hold.credits
    return released


def organization_releases(holds: Iterable[ClosedHold]) -> dict[datetime, Decimal]:
    """What closed holds give back to the organization, by period: negative."""
    released: dict[datetime, Decimal] = defaultdict(Decimal)
    for hold in holds:
        released[hold.period_start] -= hold.credits
    return released


def give_back(
    *,
    organization_id: int,
    holds: Sequence[ClosedHold],
    member: tuple[int, datetime] | None = None,
) -> None:
    """Take closed holds' credits out of the held totals: member rows, then
    organization rows, each in one statement in the lock order.
    """
    released = member_releases(holds)
    if member is not None:
        released.setdefault(member, ZERO)
    ledger.add_to_members(
        organization_id=organization_id,
        increments=[
            ledger.MemberIncrement(
                membership_id=membership_id,
                period_start=period_start,
                used=ZERO,
                counted=ZERO,
                held=held,
            )
            for (membership_id, period_start), held in released.items()
        ],
    )
    ledger.add_to_organization_periods(
        organization_id=organization_id,
        credits_by_period={},
        held_by_period=organization_releases(holds),
    )
