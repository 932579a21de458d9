"""Holds (SPEC §13): credits set aside for work priced afterwards.

A hold is allowed exactly as a consume of its credits would be, and from
then on counts against the member's limit and the organization's cap or
balance as usage does (the `held` totals, billing/holds.py), until the first
of settle, release and expiry closes it. Settling records the usage through
ingest's path (never refused: grants drawn, alerts evaluated) and gives the
held credits back in the same statements. At the alerts level for the same
reason as consume: one transaction writes both apps' rows. See docs/holds.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Organization
from alerts.services.ingest import add_to_totals
from billing import event_ledger, holds, ledger
from billing.balance import balance_now, gate_refusal
from billing.event_ledger import CONSUME_ANSWER, USAGE_EVENT, NewEvent
from billing.idempotency import fingerprint, key_reused
from billing.models import (
    DEFAULT_METER,
    HOLD_EXPIRES_IN_DEFAULT,
    HOLD_EXPIRES_IN_MAX,
    ConsumeAnswer,
    CreditHold,
    HoldStatus,
    Source,
)
from billing.periods import organization_period
from billing.rules import ZERO, Decision
from billing.selectors import limit_rules_get
from billing.sqlvalues import credits_param, moment_param
from config import rawsql
from config.credits import format_credits
from config.dbretry import retry_on_conflict
from config.errors import Conflict, InvalidInput, NotFound

HOLD_GRANTED = 201
HOLD_REFUSED = 402


@dataclass(frozen=True)
class HoldAnswer:
    """The answer to a hold request, as the API gives it (and a repeated key
    replays): 201 with the hold, or 402 with the consume's refusal.
    """

    status_code: int
    body: dict[str, Any]
    replayed: bool = False

    @property
    def allowed(self) -> bool:
        return self.status_code == HOLD_GRANTED

    def hold(self, organization: Organization) -> CreditHold:
        assert self.allowed
        return CreditHold.objects.select_related("membership", "organization").get(
            organization=organization, pk=self.body["id"]
        )

    def decision(self) -> Decision:
        """A refusal as the gate's Decision (for the blocked notice)."""
        assert not self.allowed
        return Decision.from_answer(self.body)


class _KeyTaken(Exception):
    """A concurrent request recorded its answer under this key first."""


@retry_on_conflict
def hold_create(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str = Source.ASSISTANT,
    idempotency_key: str | None = None,
    expires_in: int = HOLD_EXPIRES_IN_DEFAULT,
) -> HoldAnswer:
    """Hold `credits` for `membership` if a consume of them would be allowed.

    The key is in consume's namespace: a key a consume, an ingested event or
    another hold used answers 409, unless it is this very request again,
    which gets the first answer back.
    """
    if credits <= 0:
        raise InvalidInput("credits: must be greater than 0.", code="invalid", field="credits")
    if not 1 <= expires_in <= HOLD_EXPIRES_IN_MAX:
        raise InvalidInput(
            f"expires_in: between 1 and {HOLD_EXPIRES_IN_MAX:,} seconds.",
            code="invalid",
            field="expires_in",
        )
    now = timezone.now()
    key = idempotency_key or f"hold-{uuid.uuid4()}"
    request_fingerprint = fingerprint(
        {
            "op": "hold",
            "user": membership.pk,
            "credits": format_credits(credits),
            "source": source,
            "expires_in": expires_in,
        }
    )
    answered, holds_due = _answer_under_key(organization, key, request_fingerprint, now)
    if answered is not None:
        return answered
    try:
        with transaction.atomic():
            status_code, body = _hold(
                organization, membership, credits, source, key, expires_in, now, holds_due
            )
            # Last of the transaction's writes, as consume's.
            if not event_ledger.record_answer(
                organization_id=organization.pk,
                idempotency_key=key,
                fingerprint=request_fingerprint,
                status_code=status_code,
                body=body,
                now=now,
            ):
                raise _KeyTaken
    except _KeyTaken:
        answered, _ = _answer_under_key(organization, key, request_fingerprint, now)
        assert answered is not None
        return answered
    return HoldAnswer(status_code, body)


def _hold(
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    key: str,
    expires_in: int,
    now: datetime,
    holds_due: bool,
) -> tuple[int, dict[str, Any]]:
    """Move the held totals as far as the caps allow and write the hold; the
    answer. In the lock order: due holds, the member's row, the
    organization's, then the new hold row.
    """
    period = organization_period(organization, now)
    rules = limit_rules_get(organization=organization, membership_ids=[membership.pk])
    if holds_due:
        holds.expire_due(
            organization_id=organization.pk, now=now, member=(membership.pk, period.start)
        )
    counts = rules.counts(source)
    limit = rules.limit_for(membership.pk)
    increment = ledger.MemberIncrement(
        membership_id=membership.pk,
        period_start=period.start,
        used=ZERO,
        counted=ZERO,
        held=credits if counts else ZERO,
    )
    member = ledger.add_to_member(
        organization_id=organization.pk,
        increment=increment,
        limit=limit,
        enforce_limit=counts,
        now=now,
    )

    def refused() -> tuple[int, dict[str, Any]]:
        decision = gate_refusal(
            organization=organization,
            membership=membership,
            credits=credits,
            source=source,
            period=period,
            rules=rules,
            now=now,
        )
        return HOLD_REFUSED, decision.as_answer()

    if member is None:
        return refused()
    kept = organization.credit_balance_kept_since is not None
    blocks = organization.block_when_exhausted
    organization_totals = ledger.add_to_organization(
        organization_id=organization.pk,
        period_start=period.start,
        credits=ZERO,
        held=credits,
        allowance=period.allowance(organization.credit_allowance),
        enforce_allowance=blocks and not kept,
    )
    if organization_totals is not None and kept and blocks:
        # The grants decide too: what they and the allowance left hold must
        # cover every hold, this one included (the row lock orders it).
        balance = balance_now(
            organization=organization, period=period, used=organization_totals.used, now=now
        )
        if balance is not None and organization_totals.held > balance:
            ledger.undo_organization_increment(
                organization_id=organization.pk,
                period_start=period.start,
                credits=ZERO,
                held=credits,
            )
            organization_totals = None
    if organization_totals is None:
        ledger.undo_member_increment(increment=increment, totals=member, limit=limit, now=now)
        return refused()
    expires_at = now + timedelta(seconds=expires_in)
    hold_id = _insert_hold(
        organization, membership, credits, source, counts, period.start, expires_at, key, now
    )
    used = member.counted + member.held
    return HOLD_GRANTED, {
        "id": hold_id,
        "allowed": True,
        "held": format_credits(credits),
        "expires_at": _iso(expires_at),
        "used": format_credits(used),
        "limit": None if limit is None else format_credits(limit),
        "remaining": None if limit is None else format_credits(max(limit - used, ZERO)),
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _insert_hold(
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    counted: bool,
    period_start: datetime,
    expires_at: datetime,
    key: str,
    now: datetime,
) -> int:
    rows = rawsql.fetch_all(
        f"""
        INSERT INTO {holds.HOLD}
            (organization_id, membership_id, credits, source, counted, period_start, status,
             expires_at, idempotency_key, created_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (organization_id, idempotency_key) DO NOTHING
        RETURNING id
        """,
        [
            organization.pk,
            membership.pk,
            credits_param(credits),
            source,
            counted,
            moment_param(period_start),
            HoldStatus.HELD.value,
            moment_param(expires_at),
            key,
            moment_param(now),
        ],
    )
    if not rows:
        raise _KeyTaken
    return int(rows[0][0])


def _answer_under_key(
    organization: Organization, key: str, request_fingerprint: str, now: datetime
) -> tuple[HoldAnswer | None, bool]:
    """The first answer to this very request (None for a new key; 409 for a
    key used otherwise: a consume, an ingested event, another hold), and
    whether the organization has holds due at `now`. One query: a hold due
    at `now` was made before this read began (none expires within a second
    of being made), so no transaction after it can add one.
    """
    answer_fingerprint, status_code, body, event_fingerprint, holds_due = rawsql.fetch_all(
        f"""
        SELECT a.fingerprint, a.status_code, a.body, e.fingerprint, EXISTS ({holds.DUE})
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {CONSUME_ANSWER} AS a ON a.organization_id = %s AND a.idempotency_key = %s
        LEFT JOIN {USAGE_EVENT} AS e ON e.organization_id = %s AND e.idempotency_key = %s
        """,
        [organization.pk, moment_param(now), organization.pk, key, organization.pk, key],
    )[0]
    if answer_fingerprint is None and event_fingerprint is None:
        return None, bool(holds_due)
    if answer_fingerprint != request_fingerprint:
        raise key_reused(key)
    answer = HoldAnswer(status_code, rawsql.convert(ConsumeAnswer, "body", body), replayed=True)
    return answer, bool(holds_due)


def hold_get(*, organization: Organization, hold_id: int) -> CreditHold:
    hold = (
        CreditHold.objects.filter(organization=organization, pk=hold_id)
        .select_related("membership")
        .first()
    )
    if hold is None:
        raise NotFound(f"No hold {hold_id} in this organization.", code="hold_not_found")
    return hold


class _Closed(Exception):
    """Another closer (settle, release, expiry) won: this one writes nothing."""


@retry_on_conflict
def hold_settle(*, organization: Organization, hold_id: int, credits: Decimal) -> CreditHold:
    """Record `credits` of usage for the hold (never refused, as ingest; 0
    records nothing) and give back what it held, in one transaction. The
    usage is the member's at the moment of settling, under the hold's key.
    """
    if credits < 0:
        raise InvalidInput("credits: must be 0 or more.", code="invalid", field="credits")
    hold = hold_get(organization=organization, hold_id=hold_id)
    now = timezone.now()
    if hold.status_at(now) != HoldStatus.HELD:
        return _closed_answer(hold, HoldStatus.SETTLED, credits, now)
    period = organization_period(organization, now)
    event = NewEvent(
        membership_id=hold.membership_id,
        meter=DEFAULT_METER,
        credits=credits,
        quantity=None,
        source=hold.source,
        timestamp=now,
        period_start=period.start,
        idempotency_key=hold.idempotency_key,
        fingerprint=fingerprint(
            {"op": "settle", "hold": hold.pk, "credits": format_credits(credits)}
        ),
        properties={"hold": hold.pk},
    )
    recorded = [(event, None)] if credits > 0 else []
    try:
        with transaction.atomic():
            # The hold's key first (the lock order's first step): a second
            # settle of the same hold waits here, then finds it closed.
            if recorded and not event_ledger.insert_events(
                organization_id=organization.pk, events=[event], now=now
            ):
                raise _Closed
            closed = holds.close(
                organization_id=organization.pk,
                hold_id=hold.pk,
                status=HoldStatus.SETTLED,
                now=now,
                settled_credits=credits,
            )
            if closed is None:
                raise _Closed
            add_to_totals(organization, recorded, now, released=[closed])
    except _Closed:
        hold.refresh_from_db()
        return _closed_answer(hold, HoldStatus.SETTLED, credits, now)
    hold.status, hold.settled_credits, hold.closed_at = HoldStatus.SETTLED, credits, now
    return hold


@retry_on_conflict
def hold_release(*, organization: Organization, hold_id: int) -> CreditHold:
    """Give back what the hold held and record nothing."""
    hold = hold_get(organization=organization, hold_id=hold_id)
    now = timezone.now()
    if hold.status_at(now) == HoldStatus.HELD:
        with transaction.atomic():
            closed = holds.close(
                organization_id=organization.pk,
                hold_id=hold.pk,
                status=HoldStatus.RELEASED,
                now=now,
            )
            if closed is not None:
                holds.give_back(organization_id=organization.pk, holds=[closed])
        if closed is not None:
            hold.status, hold.closed_at = HoldStatus.RELEASED, now
            return hold
        hold.refresh_from_db()
    return _closed_answer(hold, HoldStatus.RELEASED, None, now)


def _closed_answer(
    hold: CreditHold, wanted: str, credits: Decimal | None, now: datetime
) -> CreditHold:
    """The hold, when it was closed as asked (a repeat gets the same answer);
    409 `hold_closed` when something else closed it first. A hold found due
    is expired here, so that the answer is final.
    """
    if hold.status == HoldStatus.HELD and hold.expires_at <= now:
        holds_expire_in(organization_id=hold.organization_id, now=now)
        hold.refresh_from_db()
    if hold.status == wanted and (credits is None or hold.settled_credits == credits):
        return hold
    if hold.status == wanted:
        raise Conflict(
            f"This hold was already settled for {format_credits(hold.settled_credits or ZERO)} "
            "credits.",
            code="hold_closed",
        )
    raise Conflict(
        f"This hold was already {hold.get_status_display().lower()}"
        f"{'' if hold.closed_at is None else ' at ' + _iso(hold.closed_at)}.",
        code="hold_closed",
    )


@retry_on_conflict
def holds_expire_in(*, organization_id: int, now: datetime | None = None) -> int:
    """Expire an organization's due holds; how many."""
    with transaction.atomic():
        return len(holds.expire_due(organization_id=organization_id, now=now or timezone.now()))


def holds_expire(*, now: datetime | None = None) -> int:
    """The beat's sweep: expire every due hold, organization by organization
    (writes expire their own organization's first, so this only tidies up).
    """
    now = now or timezone.now()
    organization_ids = list(
        CreditHold.objects.filter(status=HoldStatus.HELD, expires_at__lte=now)
        .values_list("organization_id", flat=True)
        .distinct()
    )
    return sum(holds_expire_in(organization_id=org_id, now=now) for org_id in organization_ids)


def hold_data(hold: CreditHold, now: datetime | None = None) -> dict[str, Any]:
    """A hold as the API gives it."""
    return {
        "id": hold.pk,
        "user": None if hold.membership is None else hold.membership.external_id,
        "credits": hold.credits,
        "source": hold.source,
        "status": hold.status_at(now or timezone.now()),
        "expires_at": hold.expires_at,
        "settled_credits": hold.settled_credits,
        "created_at": hold.created_at,
    }
