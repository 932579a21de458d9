"""The gate's write: consume spends credits if the gate allows it (SPEC §3).

One transaction takes the idempotency key in the ledger, moves the member's
and the organization's totals only as far as their caps allow (the rule is
billing/rules.py, applied by the WHERE of billing/ledger.py's upserts),
fires the alerts the spend crossed (alerts/services/rules.py), and records
the answer under the key. It lives at the alerts level because one
transaction writes both apps' rows; billing never reaches up to alerts.
See docs/gate.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Organization
from alerts.services.credits import BalanceChange, balance_changed, draw_beyond_allowance
from alerts.services.invoicing import money_on_usage
from alerts.services.rules import MemberChange, UsageChange, alerts_on_usage
from billing import event_ledger, holds, ledger
from billing.balance import gate_refusal
from billing.idempotency import fingerprint, key_reused
from billing.models import (
    DEFAULT_METER,
    ConsumeAnswer,
    Source,
)
from billing.periods import Period, organization_period
from billing.rules import ZERO, Decision
from billing.selectors import LimitRules, limit_rules_get
from config.credits import format_credits
from config.dbretry import retry_on_conflict
from config.errors import Conflict


@dataclass(frozen=True)
class ConsumeResult:
    decision: Decision
    replayed: bool = False


@dataclass(frozen=True)
class _Consume:
    """One consume request, with what it is decided against."""

    organization: Organization
    membership: Membership
    credits: Decimal
    source: str
    key: str
    now: datetime
    period: Period
    rules: LimitRules

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(
            {
                "op": "consume",
                "user": self.membership.pk,
                "credits": format_credits(self.credits),
                "source": self.source,
            }
        )

    def refusal(self) -> Decision:
        """Why the database refused: the same rule, applied to the totals now."""
        return gate_refusal(
            organization=self.organization,
            membership=self.membership,
            credits=self.credits,
            source=self.source,
            period=self.period,
            rules=self.rules,
            now=self.now,
        )


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
    now = timezone.now()
    consume = _Consume(
        organization=organization,
        membership=membership,
        credits=credits,
        source=source,
        key=idempotency_key or f"consume-{uuid.uuid4()}",
        now=now,
        period=organization_period(organization, now),
        rules=limit_rules_get(organization=organization, membership_ids=[membership.pk]),
    )
    try:
        with transaction.atomic():
            _take_event_key(consume)
            decision = _spend(consume)
            _record_consume_answer(consume, decision)
    except _KeyTaken:
        return ConsumeResult(_replay_consume(consume), replayed=True)
    return ConsumeResult(decision)


class _KeyTaken(Exception):
    """An earlier request (a consume, or ingest) used this key: what this one
    wrote is rolled back, and the first answer is replayed (or 409).
    """


def _take_event_key(consume: _Consume) -> None:
    """Insert the consume's ledger row, first of the transaction's writes.

    A concurrent request with the same key (a consume, or ingest: they share
    one namespace) waits here until the first one ends, holding no other
    lock; a key already in the ledger ends this transaction at once. Holds
    of the organization due to expire are expired next, before the totals
    are weighed (billing/holds.py).
    """
    inserted, holds_due = holds.insert_event_noting_due_holds(
        organization_id=consume.organization.pk,
        event=event_ledger.NewEvent(
            membership_id=consume.membership.pk,
            meter=DEFAULT_METER,
            credits=consume.credits,
            quantity=None,
            source=consume.source,
            timestamp=consume.now,
            period_start=consume.period.start,
            idempotency_key=consume.key,
            fingerprint=consume.fingerprint,
            properties={},
        ),
        now=consume.now,
    )
    if not inserted:
        raise _KeyTaken
    if holds_due:
        holds.expire_due(
            organization_id=consume.organization.pk,
            now=consume.now,
            member=(consume.membership.pk, consume.period.start),
        )


def _spend(consume: _Consume) -> Decision:
    """Move the member's and the organization's totals if their caps allow,
    then the day and source totals, and fire what the spend crossed.
    """
    organization, membership, credits = consume.organization, consume.membership, consume.credits
    period, now = consume.period, consume.now
    counts = consume.rules.counts(consume.source)
    limit = consume.rules.limit_for(membership.pk)
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
        return consume.refusal()
    kept = organization.credit_balance_kept_since is not None
    allowance = period.allowance(organization.credit_allowance)
    # Without a balance kept, the allowance alone caps the organization and
    # the database applies it in the upsert; with one, the grants decide too.
    organization_totals = ledger.add_to_organization(
        organization_id=organization.pk,
        period_start=period.start,
        credits=credits,
        allowance=allowance,
        enforce_allowance=organization.block_when_exhausted and not kept,
    )
    if organization_totals is None:
        ledger.undo_member_increment(increment=increment, totals=member, limit=limit, now=now)
        return consume.refusal()
    organization_total = organization_totals.used
    balance: BalanceChange | None = None
    if kept:
        balance = draw_beyond_allowance(
            organization=organization,
            period=period,
            used_before=organization_total - credits,
            credits=credits,
            now=now,
            all_or_nothing=organization.block_when_exhausted,
            held=organization_totals.held,
        )
        if balance.refuses(credits):
            ledger.undo_organization_increment(
                organization_id=organization.pk, period_start=period.start, credits=credits
            )
            ledger.undo_member_increment(increment=increment, totals=member, limit=limit, now=now)
            return consume.refusal()
    # Only once both caps have let it through, so a refusal has nothing to undo here.
    ledger.add_to_days_and_sources(
        organization_id=organization.pk,
        credits_by_day={ledger.utc_day(now): credits},
        by_source={(membership.pk, period.start, consume.source): credits},
    )
    money = money_on_usage(
        organization=organization,
        period=period,
        used_before=organization_total - credits,
        used_after=organization_total,
        drawn=balance.drawn if balance is not None else ZERO,
        now=now,
    )
    alerts_on_usage(
        UsageChange(
            organization=organization,
            period=period,
            used_before=organization_total - credits,
            used_after=organization_total,
            money=money,
            members=[
                MemberChange(
                    membership_id=membership.pk,
                    used_before=member.used - credits,
                    used_after=member.used,
                    counted_before=member.counted - increment.counted,
                    counted_after=member.counted,
                    limit=limit,
                )
            ],
        )
    )
    if balance is not None:
        balance_changed(balance)
    return Decision.allowing(used=member.counted + member.held, limit=limit, period=period)


def _record_consume_answer(consume: _Consume, decision: Decision) -> None:
    """Record the answer under its key, last of the transaction's writes;
    a refusal takes back its ledger row in the same statement. A key another
    request answered first: the work this one did is rolled back, and the
    first answer replayed.
    """
    recorded = event_ledger.record_answer(
        organization_id=consume.organization.pk,
        idempotency_key=consume.key,
        fingerprint=consume.fingerprint,
        status_code=200 if decision.allowed else 402,
        body=decision.as_answer(),
        now=consume.now,
        take_back_event=not decision.allowed,
    )
    if not recorded:
        raise _KeyTaken


def _replay_consume(consume: _Consume) -> Decision:
    """The first answer to this key; 409 if it was used for something else
    (another consume's body, or an ingested event).
    """
    key = consume.key
    answer = ConsumeAnswer.objects.filter(
        organization=consume.organization, idempotency_key=key
    ).first()
    if answer is None:
        recorded = event_ledger.fingerprints_of(organization_id=consume.organization.pk, keys=[key])
        if recorded.get(key) == consume.fingerprint:
            # This very consume, allowed so long ago that its answer was pruned.
            raise Conflict(
                f"The idempotency key {key!r} was used more than "
                f"{settings.IDEMPOTENCY_RETENTION_DAYS} days ago: its usage was recorded "
                "once, and its answer is no longer kept.",
                code="idempotency_key_expired",
                field="idempotency_key",
            )
    if answer is None or answer.fingerprint != consume.fingerprint:
        raise key_reused(key)
    return Decision.from_answer(answer.body)
