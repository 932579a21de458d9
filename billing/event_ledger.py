"""The ledger of usage events: rows inserted once under their idempotency
keys, never updated (the keys' lock order is billing/ledger.py's first step).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection

from billing.models import ConsumeAnswer, UsageEvent
from billing.sqlvalues import sql_rows
from config import rawsql

CONSUME_ANSWER = ConsumeAnswer._meta.db_table
USAGE_EVENT = UsageEvent._meta.db_table


@dataclass(frozen=True)
class NewEvent:
    membership_id: int | None
    meter: str
    credits: Decimal
    quantity: Decimal | None
    source: str
    timestamp: datetime
    period_start: datetime
    idempotency_key: str
    fingerprint: str
    properties: dict[str, Any]


def insert_events(*, organization_id: int, events: Sequence[NewEvent], now: datetime) -> set[str]:
    """Insert ledger rows whose key is new; returns the keys actually inserted.

    In key order: each row takes its key's lock in the unique index (and
    waits there for a concurrent transaction holding the same key), so two
    batches sharing keys in different orders would each hold a key the
    other waits for.
    """
    if not events:
        return set()
    rows, params = event_rows(organization_id, events, now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {USAGE_EVENT} {EVENT_COLUMNS}
            {rows}
            ON CONFLICT (organization_id, idempotency_key) DO NOTHING
            RETURNING idempotency_key
            """,
            params,
        )
        return {row[0] for row in cursor.fetchall()}


EVENT_COLUMNS = """(organization_id, membership_id, meter, credits, quantity, source, timestamp,
    period_start, idempotency_key, fingerprint, properties, recorded_at)"""


def event_rows(
    organization_id: int, events: Sequence[NewEvent], now: datetime
) -> tuple[str, list[Any]]:
    """The rows to follow `INSERT INTO … EVENT_COLUMNS`, in key order, and their parameters."""
    events = sorted(events, key=lambda event: event.idempotency_key)
    return sql_rows(
        (
            "bigint",
            "bigint",
            "text",
            "numeric",
            "numeric",
            "text",
            "timestamptz",
            "timestamptz",
            "text",
            "text",
            "jsonb",
            "timestamptz",
        ),
        [
            (
                organization_id,
                event.membership_id,
                event.meter,
                event.credits,
                event.quantity,
                event.source,
                event.timestamp,
                event.period_start,
                event.idempotency_key,
                event.fingerprint,
                _json_param(event.properties),
                now,
            )
            for event in events
        ],
    )


def record_answer(
    *,
    organization_id: int,
    idempotency_key: str,
    fingerprint: str,
    status_code: int,
    body: dict[str, Any],
    now: datetime,
    take_back_event: bool = False,
) -> bool:
    """Record the first answer under a consume's (or a hold's) key; False
    when the key already had one. With `take_back_event`, the ledger row this
    transaction inserted under the key is deleted in the same statement (a
    refused consume: it took its key first and records no usage).

    The answer's unique key is what makes a repeated key safe even for a
    refusal, which leaves no ledger row: a concurrent request with the same
    key waits here until the first one commits, then finds the key taken.
    """
    take_back = ""
    take_back_params: list[Any] = []
    if take_back_event:
        if connection.vendor == "postgresql":
            take_back = (
                f"WITH refused AS (DELETE FROM {USAGE_EVENT}"
                " WHERE organization_id = %s AND idempotency_key = %s)"
            )
            take_back_params = [organization_id, idempotency_key]
        else:  # SQLite (the local demo database) has no DELETE inside WITH
            delete_event(organization_id=organization_id, idempotency_key=idempotency_key)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            {take_back}
            INSERT INTO {CONSUME_ANSWER}
                (organization_id, idempotency_key, fingerprint, status_code, body, created_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (organization_id, idempotency_key) DO NOTHING
            RETURNING id
            """,
            [
                *take_back_params,
                organization_id,
                idempotency_key,
                fingerprint,
                status_code,
                connection.ops.adapt_json_value(body, json.JSONEncoder),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )
        return cursor.fetchone() is not None


def delete_event(*, organization_id: int, idempotency_key: str) -> None:
    """Take back a ledger row this transaction inserted (a refused consume's:
    it took its key first, see `alerts.services.consume.usage_consume`). Nobody else
    ever saw the row; a transaction waiting on its key goes on once this one
    ends, and finds the key free in the ledger.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {USAGE_EVENT} WHERE organization_id = %s AND idempotency_key = %s",
            [organization_id, idempotency_key],
        )


def _json_param(value: dict[str, Any]) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def consume_keys_among(*, organization_id: int, keys: Sequence[str]) -> set[str]:
    """Which of these idempotency keys a consume has taken."""
    rows = _rows_with_keys(f"SELECT idempotency_key FROM {CONSUME_ANSWER}", organization_id, keys)
    return {key for (key,) in rows}


def fingerprints_of(*, organization_id: int, keys: Sequence[str]) -> dict[str, str]:
    """The fingerprints of the ledger rows with these keys."""
    return dict(
        _rows_with_keys(
            f"SELECT idempotency_key, fingerprint FROM {USAGE_EVENT}", organization_id, keys
        )
    )


def _rows_with_keys(
    select: str, organization_id: int, keys: Sequence[str]
) -> list[tuple[Any, ...]]:
    """The rows of `select` for the organization's rows with these idempotency keys."""
    if not keys:
        return []
    condition, params = rawsql.any_of("idempotency_key", keys)
    return rawsql.fetch_all(
        f"{select} WHERE organization_id = %s AND {condition}", [organization_id, *params]
    )
