"""The meters' running totals (SPEC §10), moved by the write that records
their events, like the credit totals (billing/ledger.py), so that no read
ever scans the raw events.

Per period, for the organization (`member_key` 0) and each member:

- `sum` adds the quantities, `count` the events, `max` keeps the largest
  quantity: one upsert whose update combines by the row's aggregation;
- `unique_count` first inserts each (period, member key, value) into the
  distinct values, whose unique key lets only the write that inserts a
  value count it; the values it inserted are what it adds.

Every row here is taken only by a transaction that already holds the
organization's total row of that period (ingest moves it first, even for
events that cost 0 credits): the meters add no lock order and no
contention of their own. Within a statement, rows go in key order.
On PostgreSQL one statement per write, whatever the number of events
(three elsewhere).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection

from accounts.models import Organization
from billing.meter_selectors import ORGANIZATION_KEY, meter_totals_get
from billing.models import (
    DAILY_AGGREGATIONS,
    MAX_DISTINCT_VALUE_LENGTH,
    Aggregation,
    Meter,
    MeterDailyUsage,
    MeterDistinctValue,
    MeterUsage,
)
from billing.periods import Period
from billing.sqlvalues import credits_result, moment_result, sql_rows
from config import rawsql
from config.credits import CREDIT_QUANTUM, MAX_CREDITS
from config.errors import InvalidInput

METER_USAGE = MeterUsage._meta.db_table
METER_DAILY_USAGE = MeterDailyUsage._meta.db_table
METER_DISTINCT_VALUE = MeterDistinctValue._meta.db_table
ONE = Decimal(1)
ZERO = Decimal(0)
# A row's new value in an upsert: `max` keeps the larger, the others add.
COMBINED = (
    "CASE WHEN t.aggregation <> 'max' THEN t.value + EXCLUDED.value"
    " WHEN EXCLUDED.value > t.value THEN EXCLUDED.value ELSE t.value END"
)


def meters_by_key(keys: set[str]) -> dict[str, Meter]:
    """The platform's meters with these keys: one query written as SQL, as
    every ingest of metered events runs it (see config/rawsql.py); none
    asked, none.
    """
    if not keys:
        return {}
    condition, params = rawsql.any_of("m.key", sorted(keys))
    rows = rawsql.fetch_all(
        f"SELECT {rawsql.columns(Meter, 'm')} FROM {Meter._meta.db_table} m WHERE {condition}",
        params,
    )
    meters = [rawsql.instance(Meter, row) for row in rows]
    return {meter.key: meter for meter in meters}


def meter_values(
    *, organization: Organization, period: Period, meter_ids: set[int]
) -> list[MeterChange]:
    """The organization's values of these meters in `period`, as changes from
    nothing (for evaluating alerts after a change of configuration).
    """
    if not meter_ids:
        return []
    values = meter_totals_get(
        organization=organization, period=period, with_members=False
    ).organization
    return [
        MeterChange(
            meter=meter,
            period_start=period.start,
            before=ZERO,
            after=values.get(meter.pk, ZERO),
        )
        for meter in Meter.objects.filter(pk__in=meter_ids)
    ]


def event_credits(meter: Meter, quantity: Decimal) -> Decimal:
    """What an event of `meter` costs when it gives no credits: its quantity
    at the meter's price, to 6 fractional digits (half up); 0 without a price.
    """
    if meter.credits_per_unit is None:
        return Decimal(0).quantize(CREDIT_QUANTUM)
    return (quantity * meter.credits_per_unit).quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_UP)


def distinct_value(meter: Meter, properties: dict[str, Any], field: str) -> str:
    """The value a unique_count event counts: its property, a string or a
    whole number (42 and "42" are one value).
    """
    if meter.property not in properties:
        raise InvalidInput(
            f"{field}: meter {meter.key!r} counts distinct values of the property "
            f"{meter.property!r}, which this event does not have.",
            code="missing_property",
            field=field,
        )
    raw = properties[meter.property]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidInput(
            f"{field}.{meter.property}: must be a string or a whole number.",
            code="invalid_property",
            field=f"{field}.{meter.property}",
        )
    value = raw if isinstance(raw, str) else str(raw)
    if not value or len(value) > MAX_DISTINCT_VALUE_LENGTH:
        raise InvalidInput(
            f"{field}.{meter.property}: must be 1 to {MAX_DISTINCT_VALUE_LENGTH:,} characters.",
            code="invalid_property",
            field=f"{field}.{meter.property}",
        )
    return value


def meter_quantity(
    meter: Meter, quantity: Decimal | None, credits: Decimal | None, index: int
) -> tuple[Decimal | None, Decimal]:
    """An event's quantity and credits on `meter`: sum and max need a
    quantity; count and unique_count count the event (1 unit for its price).
    """
    if quantity is None and meter.aggregation in (Aggregation.SUM, Aggregation.MAX):
        raise InvalidInput(
            f"events[{index}].quantity: required for meter {meter.key!r} "
            f"({meter.get_aggregation_display().lower()}).",
            code="quantity_required",
            field=f"events[{index}].quantity",
        )
    if credits is None:
        credits = event_credits(meter, ONE if quantity is None else quantity)
        if credits > MAX_CREDITS:
            raise InvalidInput(
                f"events[{index}].quantity: at the meter's price the event would cost more "
                "credits than can be recorded.",
                code="credits_too_large",
                field=f"events[{index}].quantity",
            )
    return quantity, credits


@dataclass(frozen=True)
class MeterEvent:
    """One recorded event of a meter other than credits, as the totals need it."""

    meter: Meter
    membership_id: int | None
    period_start: datetime
    day: date
    quantity: Decimal | None
    distinct: str | None = None


@dataclass(frozen=True)
class MeterChange:
    """What a write did to the organization's value of a meter in a period."""

    meter: Meter
    period_start: datetime
    before: Decimal
    after: Decimal


Key = tuple[int, datetime, int]  # meter id, period start, member key


def add_to_meters(*, organization_id: int, events: Sequence[MeterEvent]) -> list[MeterChange]:
    """Move every meter total the events touch; the organization's changes."""
    if not events:
        return []
    meters = {event.meter.pk: event.meter for event in events}
    increments: dict[Key, Decimal] = {}
    members: dict[Key, int | None] = {}
    daily: dict[tuple[int, date], Decimal] = {}
    distinct: set[tuple[int, datetime, int, str]] = set()
    for event in events:
        meter = event.meter
        member_keys = [ORGANIZATION_KEY]
        if event.membership_id is not None:
            member_keys.append(event.membership_id)
        for member_key in member_keys:
            key = (meter.pk, event.period_start, member_key)
            members[key] = event.membership_id if member_key else None
            if meter.aggregation == Aggregation.UNIQUE_COUNT:
                assert event.distinct is not None
                distinct.add((*key, event.distinct))
            else:
                increments[key] = _combine(meter, increments.get(key), _amount(event))
        if meter.aggregation in DAILY_AGGREGATIONS:
            day_key = (meter.pk, event.day)
            daily[day_key] = _combine(meter, daily.get(day_key), _amount(event))
    rows = (organization_id, meters, increments, members, daily, distinct)
    if connection.vendor == "postgresql":
        return _add_in_one_statement(*rows)
    return _add_statement_by_statement(*rows)


def _amount(event: MeterEvent) -> Decimal:
    if event.meter.aggregation == Aggregation.COUNT:
        return ONE
    assert event.quantity is not None
    return event.quantity


def _combine(meter: Meter, total: Decimal | None, amount: Decimal) -> Decimal:
    if total is None:
        return amount
    return max(total, amount) if meter.aggregation == Aggregation.MAX else total + amount


def _add_in_one_statement(
    organization_id: int,
    meters: dict[int, Meter],
    increments: dict[Key, Decimal],
    members: dict[Key, int | None],
    daily: dict[tuple[int, date], Decimal],
    distinct: set[tuple[int, datetime, int, str]],
) -> list[MeterChange]:
    """On PostgreSQL, the three writes of `_add_statement_by_statement` as
    one statement (one round trip, whatever the meters): the distinct values
    it inserts become the unique_count increments of the usage upsert.
    """
    # Each set of rows goes as one JSON document: psycopg quotes an array
    # parameter element by element in Python, json.dumps all of it in C.
    params: dict[str, int | str] = {
        "organization": organization_id,
        "distinct": _json(
            {"meter_id": meter_id, "period_start": period_start, "member_key": key, "value": value}
            for meter_id, period_start, key, value in sorted(distinct)
        ),
        "usage": _json(
            {
                "meter_id": meter_id,
                "membership_id": members[(meter_id, period_start, key)],
                "member_key": key,
                "period_start": period_start,
                "aggregation": meters[meter_id].aggregation,
                "value": increments[(meter_id, period_start, key)],
            }
            for meter_id, period_start, key in sorted(increments)
        ),
        "daily": _json(
            {
                "meter_id": meter_id,
                "day": day,
                "aggregation": meters[meter_id].aggregation,
                "value": daily[(meter_id, day)],
            }
            for meter_id, day in sorted(daily)
        ),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH gained AS (
                INSERT INTO {METER_DISTINCT_VALUE} AS t
                    (organization_id, meter_id, period_start, member_key, value)
                SELECT %(organization)s, * FROM json_to_recordset(%(distinct)s::json)
                    AS d(meter_id bigint, period_start timestamptz, member_key bigint, value text)
                ON CONFLICT (organization_id, meter_id, period_start, member_key, value)
                    DO NOTHING
                RETURNING meter_id, period_start, member_key
            ),
            days AS (
                INSERT INTO {METER_DAILY_USAGE} AS t
                    (organization_id, meter_id, day, aggregation, value)
                SELECT %(organization)s, * FROM json_to_recordset(%(daily)s::json)
                    AS d(meter_id bigint, day date, aggregation text, value numeric)
                ON CONFLICT (organization_id, meter_id, day) DO UPDATE SET
                    value = {COMBINED}
            ),
            increments AS (
                SELECT * FROM json_to_recordset(%(usage)s::json) AS u(
                    meter_id bigint, membership_id bigint, member_key bigint,
                    period_start timestamptz, aggregation text, value numeric)
                UNION ALL
                SELECT meter_id, NULLIF(member_key, {ORGANIZATION_KEY}), member_key, period_start,
                    '{Aggregation.UNIQUE_COUNT.value}', count(*)
                FROM gained GROUP BY meter_id, member_key, period_start
            ),
            upserted AS (
                INSERT INTO {METER_USAGE} AS t
                    (organization_id, meter_id, membership_id, member_key, period_start,
                     aggregation, value, previous_value)
                SELECT %(organization)s, meter_id, membership_id, member_key, period_start,
                    aggregation, value, 0
                FROM increments ORDER BY meter_id, period_start, member_key
                ON CONFLICT (organization_id, meter_id, period_start, member_key) DO UPDATE SET
                    previous_value = t.value,
                    value = {COMBINED}
                RETURNING meter_id, member_key, period_start, previous_value, value
            )
            SELECT meter_id, period_start, previous_value, value FROM upserted
            WHERE member_key = {ORGANIZATION_KEY}
            """,
            params,
        )
        return [
            MeterChange(
                meter=meters[meter_id],
                period_start=period_start,
                before=credits_result(before),
                after=credits_result(after),
            )
            for meter_id, period_start, before, after in cursor.fetchall()
        ]


def _json(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(rows), default=_json_value)


def _json_value(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # and datetime
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a meter row value")


def _add_statement_by_statement(
    organization_id: int,
    meters: dict[int, Meter],
    increments: dict[Key, Decimal],
    members: dict[Key, int | None],
    daily: dict[tuple[int, date], Decimal],
    distinct: set[tuple[int, datetime, int, str]],
) -> list[MeterChange]:
    """The portable path (SQLite, the local demo database): three statements."""
    increments = dict(increments)
    for key, new_values in _insert_distinct(organization_id, distinct).items():
        increments[key] = Decimal(new_values)
    changes = _upsert_usage(organization_id, meters, increments, members)
    _upsert_daily(organization_id, meters, daily)
    return changes


def _insert_distinct(
    organization_id: int, values: set[tuple[int, datetime, int, str]]
) -> dict[Key, int]:
    """Insert the distinct values not seen yet; how many each key gained."""
    if not values:
        return {}
    rows, params = sql_rows(
        ("bigint", "bigint", "timestamptz", "bigint", "text"),
        [(organization_id, *value) for value in sorted(values)],
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {METER_DISTINCT_VALUE} AS t
                (organization_id, meter_id, period_start, member_key, value)
            {rows}
            ON CONFLICT (organization_id, meter_id, period_start, member_key, value) DO NOTHING
            RETURNING meter_id, period_start, member_key
            """,
            params,
        )
        gained: dict[Key, int] = defaultdict(int)
        for meter_id, period_start, member_key in cursor.fetchall():
            gained[(meter_id, moment_result(period_start), member_key)] += 1  # type: ignore[index]
    return gained


def _upsert_usage(
    organization_id: int,
    meters: dict[int, Meter],
    increments: dict[Key, Decimal],
    members: dict[Key, int | None],
) -> list[MeterChange]:
    if not increments:
        return []
    rows, params = sql_rows(
        ("bigint", "bigint", "bigint", "bigint", "timestamptz", "text", "numeric", "numeric"),
        [
            (
                organization_id,
                meter_id,
                members[key],
                member_key,
                period_start,
                meters[meter_id].aggregation,
                increments[key],
                ZERO,
            )
            for key in sorted(increments)
            for meter_id, period_start, member_key in [key]
        ],
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {METER_USAGE} AS t
                (organization_id, meter_id, membership_id, member_key, period_start,
                 aggregation, value, previous_value)
            {rows}
            ON CONFLICT (organization_id, meter_id, period_start, member_key) DO UPDATE SET
                previous_value = t.value,
                value = {COMBINED}
            RETURNING meter_id, period_start, member_key, previous_value, value
            """,
            params,
        )
        return [
            MeterChange(
                meter=meters[meter_id],
                period_start=moment_result(period_start),  # type: ignore[arg-type]
                before=credits_result(before),
                after=credits_result(after),
            )
            for meter_id, period_start, member_key, before, after in cursor.fetchall()
            if member_key == ORGANIZATION_KEY
        ]


def _upsert_daily(
    organization_id: int, meters: dict[int, Meter], daily: dict[tuple[int, date], Decimal]
) -> None:
    if not daily:
        return
    rows, params = sql_rows(
        ("bigint", "bigint", "date", "text", "numeric"),
        [
            (organization_id, meter_id, day, meters[meter_id].aggregation, daily[(meter_id, day)])
            for meter_id, day in sorted(daily)
        ],
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {METER_DAILY_USAGE} AS t
                (organization_id, meter_id, day, aggregation, value)
            {rows}
            ON CONFLICT (organization_id, meter_id, day) DO UPDATE SET
                value = {COMBINED}
            """,
            params,
        )
