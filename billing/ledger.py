"""The SQL that moves the running totals.

Every total is changed by an `INSERT … ON CONFLICT DO UPDATE SET x = x + …`,
so that it is one statement, needs no prior read and is safe under
concurrency. The gate's guarded variants add a `WHERE` to the conflict
update: the database refuses the increment that would pass a cap, under the
row lock it already holds, so no interleaving can overshoot.

Lock order, everywhere: the ledger's idempotency keys (by key), then member
rows (by membership id and period), then the organization's rows (by
period; the current one is also its credit balance's lock, billing/grants.py),
then its grants (in drawdown order), then its day rows (by day), then the
per-source rows (by member, period and source); consume's answer key comes
last. Consume and ingest
both follow it, so they cannot deadlock with each other or themselves. A
multi-row statement takes its rows' locks in the order of its rows, so each
one is given its rows sorted by the conflict key (an `unnest` is scanned in
array order, a VALUES list in list order). A day or source row is only ever
taken by a transaction that already holds its period's organization row, so
they add no contention of their own, and one statement may take both
(`add_to_days_and_sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import F, Value

from billing.models import (
    DailyUsage,
    MemberUsage,
    OrganizationUsage,
    SourceUsage,
)
from billing.rules import ZERO, over_budget
from billing.sqlvalues import (
    credits_param,
    credits_result,
    moment_param,
    moment_result,
    sql_rows,
)
from config import rawsql

DAILY_USAGE = DailyUsage._meta.db_table
MEMBER_USAGE = MemberUsage._meta.db_table
ORGANIZATION_USAGE = OrganizationUsage._meta.db_table
SOURCE_USAGE = SourceUsage._meta.db_table


@dataclass(frozen=True)
class MemberTotals:
    id: int
    membership_id: int
    period_start: datetime
    used: Decimal
    counted: Decimal
    limit_reached_at: datetime | None
    held: Decimal = ZERO  # credits held toward the limit (SPEC §13)


@dataclass(frozen=True)
class MemberIncrement:
    membership_id: int
    period_start: datetime
    used: Decimal
    counted: Decimal
    held: Decimal = ZERO


def add_to_member(
    *,
    organization_id: int,
    increment: MemberIncrement,
    limit: Decimal | None,
    enforce_limit: bool,
    now: datetime,
) -> MemberTotals | None:
    """Add to one member's totals. With `enforce_limit`, only if counted usage
    and held credits stay within `limit`: None means refused, and nothing was
    written. `limit_reached_at` is set the first time counted usage reaches
    `limit`.
    """
    if enforce_limit and limit is not None and increment.counted + increment.held > limit:
        return None  # a new row would be inserted unguarded, so check it here
    reached_now = over_budget(increment.counted, limit)
    guard = (
        "WHERE t.counted + t.held + EXCLUDED.counted + EXCLUDED.held <= %s"
        if enforce_limit and limit is not None
        else ""
    )
    params = [
        organization_id,
        increment.membership_id,
        moment_param(increment.period_start),
        credits_param(increment.used),
        credits_param(increment.counted),
        credits_param(increment.held),
        moment_param(now if reached_now else None),
        credits_param(limit),
        moment_param(now),
    ]
    if guard:
        params.append(credits_param(limit))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {MEMBER_USAGE} AS t
                (organization_id, membership_id, period_start, used, counted, held,
                 limit_reached_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (membership_id, period_start) DO UPDATE SET
                used = t.used + EXCLUDED.used,
                counted = t.counted + EXCLUDED.counted,
                held = t.held + EXCLUDED.held,
                -- over_budget (billing/rules.py) of the new total, the first time
                limit_reached_at = CASE
                    WHEN t.limit_reached_at IS NULL AND t.counted + EXCLUDED.counted >= %s THEN %s
                    ELSE t.limit_reached_at END
            {guard}
            RETURNING {_MEMBER_TOTALS}
            """,
            params,
        )
        row = cursor.fetchone()
    return _member_totals(row) if row else None


_MEMBER_TOTALS = "id, membership_id, period_start, used, counted, limit_reached_at, held"


def _member_totals(row: Sequence[Any]) -> MemberTotals:
    return MemberTotals(
        id=row[0],
        membership_id=row[1],
        period_start=moment_result(row[2]),  # type: ignore[arg-type]
        used=credits_result(row[3]),
        counted=credits_result(row[4]),
        limit_reached_at=moment_result(row[5]),
        held=credits_result(row[6]),
    )


def undo_member_increment(
    *, increment: MemberIncrement, totals: MemberTotals, limit: Decimal | None, now: datetime
) -> None:
    """Take back what `add_to_member` did at `now` (its answer: `totals`),
    within the same transaction (the row is still locked): the increment, and
    the limit-reached mark if that statement set it. A mark set at the same
    moment by an earlier write (a frozen clock) stays: usage without this
    increment had reached the limit already.
    """
    set_here = totals.limit_reached_at == now and not over_budget(
        totals.counted - increment.counted, limit
    )
    MemberUsage.objects.filter(
        membership_id=increment.membership_id, period_start=increment.period_start
    ).update(
        used=F("used") - increment.used,
        counted=F("counted") - increment.counted,
        held=F("held") - increment.held,
        limit_reached_at=Value(None) if set_here else F("limit_reached_at"),
    )


def add_to_members(
    *, organization_id: int, increments: Sequence[MemberIncrement]
) -> list[MemberTotals]:
    """Add to many members' totals at once (ingest, and the credits a hold
    gives back: never refused).

    One statement; rows in membership order, the lock order.
    """
    if not increments:
        return []
    ordered = sorted(increments, key=lambda i: (i.membership_id, i.period_start))
    rows, params = sql_rows(
        ("bigint", "bigint", "timestamptz", "numeric", "numeric", "numeric"),
        [
            (organization_id, i.membership_id, i.period_start, i.used, i.counted, i.held)
            for i in ordered
        ],
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {MEMBER_USAGE} AS t
                (organization_id, membership_id, period_start, used, counted, held)
            {rows}
            ON CONFLICT (membership_id, period_start) DO UPDATE SET
                used = t.used + EXCLUDED.used,
                counted = t.counted + EXCLUDED.counted,
                held = t.held + EXCLUDED.held
            RETURNING {_MEMBER_TOTALS}
            """,
            params,
        )
        return [_member_totals(row) for row in cursor.fetchall()]


def mark_limits_reached(*, member_usage_ids: Sequence[int], now: datetime) -> None:
    """Record when these members reached their limit, where not recorded yet.

    One statement that locks the rows in the lock order (by membership and
    period) before it updates them: an UPDATE by id alone would lock them in
    whatever order its plan reads them, and a limit change marking members
    while an ingest moves them could deadlock.
    """
    if not member_usage_ids:
        return
    condition, params = rawsql.any_of("id", member_usage_ids)
    # SQLite (the local demo database) has no row locks: it writes one at a time.
    lock = "FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {MEMBER_USAGE} SET limit_reached_at = %s
            WHERE id IN (
                SELECT id FROM {MEMBER_USAGE}
                WHERE {condition} AND limit_reached_at IS NULL
                ORDER BY membership_id, period_start
                {lock}
            )
            """,
            [moment_param(now), *params],
        )


@dataclass(frozen=True)
class OrganizationTotals:
    used: Decimal
    held: Decimal  # credits held for work not yet priced (SPEC §13)


def add_to_organization(
    *,
    organization_id: int,
    period_start: datetime,
    credits: Decimal,
    allowance: Decimal | None,
    enforce_allowance: bool,
    held: Decimal = ZERO,
) -> OrganizationTotals | None:
    """Add `credits` used and `held` held to the organization's totals; with
    `enforce_allowance`, only if usage and held credits stay within
    `allowance`. Returns the new totals, or None if refused.
    """
    guarded = enforce_allowance and allowance is not None
    if guarded and credits + held > allowance:  # type: ignore[operator]
        return None
    guard = "WHERE t.used + t.held + EXCLUDED.used + EXCLUDED.held <= %s" if guarded else ""
    params = [
        organization_id,
        moment_param(period_start),
        credits_param(credits),
        credits_param(held),
    ]
    if guarded:
        params.append(credits_param(allowance))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {ORGANIZATION_USAGE} AS t (organization_id, period_start, used, held)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (organization_id, period_start) DO UPDATE SET
                used = t.used + EXCLUDED.used, held = t.held + EXCLUDED.held
            {guard}
            RETURNING used, held
            """,
            params,
        )
        row = cursor.fetchone()
    return OrganizationTotals(credits_result(row[0]), credits_result(row[1])) if row else None


def undo_organization_increment(
    *, organization_id: int, period_start: datetime, credits: Decimal, held: Decimal = ZERO
) -> None:
    """Take back what `add_to_organization` added, within the same transaction
    (the row is still locked).
    """
    OrganizationUsage.objects.filter(
        organization_id=organization_id, period_start=period_start
    ).update(used=F("used") - credits, held=F("held") - held)


def lock_organization_total(*, organization_id: int, period_start: datetime) -> Decimal:
    """Lock the organization's total row of a period (creating it at 0) and
    return its usage: the lock of the organization's credit balance, taken by
    whatever changes the balance without moving the total (a grant, a void,
    an expiry), in the lock order's place of the organization's rows.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {ORGANIZATION_USAGE} AS t (organization_id, period_start, used)
            VALUES (%s, %s, 0)
            ON CONFLICT (organization_id, period_start) DO UPDATE SET used = t.used
            RETURNING used
            """,
            [organization_id, moment_param(period_start)],
        )
        row = cursor.fetchone()
    return credits_result(row[0])


def add_to_organization_periods(
    *,
    organization_id: int,
    credits_by_period: dict[datetime, Decimal],
    held_by_period: dict[datetime, Decimal] | None = None,
) -> dict[datetime, Decimal]:
    """Add to several periods' totals of one organization (and to their held
    credits: negative, when holds give them back); returns the new usage.
    """
    held_by_period = held_by_period or {}
    periods = sorted(credits_by_period.keys() | held_by_period.keys())
    if not periods:
        return {}
    rows, params = sql_rows(
        ("bigint", "timestamptz", "numeric", "numeric"),
        [
            (
                organization_id,
                start,
                credits_by_period.get(start, ZERO),
                held_by_period.get(start, ZERO),
            )
            for start in periods
        ],
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {ORGANIZATION_USAGE} AS t (organization_id, period_start, used, held)
            {rows}
            ON CONFLICT (organization_id, period_start) DO UPDATE SET
                used = t.used + EXCLUDED.used, held = t.held + EXCLUDED.held
            RETURNING period_start, used
            """,
            params,
        )
        return {moment_result(row[0]): credits_result(row[1]) for row in cursor.fetchall()}  # type: ignore[misc]


SourceIncrements = dict[tuple[int | None, datetime, str], Decimal]


def add_to_days_and_sources(
    *,
    organization_id: int,
    credits_by_day: dict[date, Decimal],
    by_source: SourceIncrements,
) -> None:
    """Add to the organization's daily totals (days in UTC) and its
    per-source totals, keyed by (membership id or None, period start,
    source): one statement on PostgreSQL, the days' upsert a `WITH` of the
    sources'.

    Called only after the organization's totals of the same periods have
    been moved in the same transaction: their row locks are held (see the
    lock order above), so no other writer takes these rows meanwhile, and
    the order in which the one statement takes them does not matter.
    """
    statements = [
        statement
        for statement in (
            _days_upsert(organization_id, credits_by_day),
            _sources_upsert(organization_id, by_source),
        )
        if statement is not None
    ]
    if not statements:
        return
    if connection.vendor == "postgresql" and len(statements) == 2:
        (days, day_params), (sources, source_params) = statements
        statements = [(f"WITH days AS ({days})\n{sources}", [*day_params, *source_params])]
    with connection.cursor() as cursor:
        for sql, params in statements:  # SQLite (the local demo database): one by one
            cursor.execute(sql, params)


def _days_upsert(
    organization_id: int, credits_by_day: dict[date, Decimal]
) -> tuple[str, list[Any]] | None:
    if not credits_by_day:
        return None
    rows, params = sql_rows(
        ("bigint", "date", "numeric"),
        [(organization_id, day, credits_by_day[day]) for day in sorted(credits_by_day)],
    )
    sql = f"""
        INSERT INTO {DAILY_USAGE} AS t (organization_id, day, used)
        {rows}
        ON CONFLICT (organization_id, day) DO UPDATE SET used = t.used + EXCLUDED.used
    """
    return sql, params


def _sources_upsert(
    organization_id: int, increments: SourceIncrements
) -> tuple[str, list[Any]] | None:
    if not increments:
        return None
    keys = sorted(increments, key=lambda k: (k[0] or 0, k[1], k[2]))
    rows, params = sql_rows(
        ("bigint", "bigint", "bigint", "timestamptz", "text", "numeric"),
        [
            (organization_id, membership_id, membership_id or 0, period_start, source, used)
            for membership_id, period_start, source in keys
            for used in [increments[(membership_id, period_start, source)]]
        ],
    )
    sql = f"""
        INSERT INTO {SOURCE_USAGE} AS t
            (organization_id, membership_id, member_key, period_start, source, used)
        {rows}
        ON CONFLICT (organization_id, member_key, period_start, source)
        DO UPDATE SET used = t.used + EXCLUDED.used
    """
    return sql, params


def utc_day(moment: datetime) -> date:
    """The UTC day of an aware moment: the key of the daily totals."""
    return moment.astimezone(UTC).date()
