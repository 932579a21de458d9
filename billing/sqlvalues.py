"""Python values to and from the SQL that billing writes by hand
(billing/ledger.py, billing/grants.py), the same on PostgreSQL and on
SQLite (the local demo database).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from config.credits import CREDIT_DECIMAL_PLACES, CREDIT_MAX_DIGITS, CREDIT_QUANTUM


def credits_param(value: Decimal | None) -> Any:
    if connection.vendor == "sqlite" and value is not None:
        # Django hands SQLite decimals as text, and SQLite ranks every number
        # below any text: a cap compared with one would never refuse. SQLite
        # stores these columns as REAL anyway (the local demo database only).
        return float(value)
    return connection.ops.adapt_decimalfield_value(value, CREDIT_MAX_DIGITS, CREDIT_DECIMAL_PLACES)


def moment_param(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def credits_result(value: Any) -> Decimal:
    # PostgreSQL answers Decimal; SQLite (the local demo database) answers int or float.
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(CREDIT_QUANTUM)


def moment_result(value: Any) -> datetime | None:
    # PostgreSQL answers aware datetimes; SQLite naive ones (or text), in UTC.
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    if moment is not None and timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


# Above this many values, PostgreSQL gets arrays rather than placeholders.
UNNEST_ABOVE_VALUES = 100


def sql_rows(types: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """The rows to follow `INSERT INTO table (columns)`, and their parameters.

    Many rows go to PostgreSQL as one array per column (`SELECT * FROM
    unnest(…)`), so the statement has a parameter per column whatever their
    number: a VALUES list of 11,000 placeholders cost more to build and parse
    than the insert itself. A few rows (a consume's) go as a VALUES list,
    which costs less to send than arrays. `types` are PostgreSQL's element
    types; values go in as Python objects.
    """
    if connection.vendor == "postgresql" and len(rows) * len(types) > UNNEST_ABOVE_VALUES:
        arrays = ", ".join(f"%s::{column_type}[]" for column_type in types)
        columns = [list(column) for column in zip(*rows, strict=True)]
        return f"SELECT * FROM unnest({arrays})", columns
    row = "(" + ", ".join(["%s"] * len(types)) + ")"
    params = [_param(value) for values in rows for value in values]
    return f"VALUES {', '.join([row] * len(rows))}", params


def _param(value: Any) -> Any:
    if isinstance(value, Decimal):
        return credits_param(value)
    if isinstance(value, datetime):
        return moment_param(value)
    if isinstance(value, date):
        return connection.ops.adapt_datefield_value(value)
    return value
