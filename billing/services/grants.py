"""Credit grants: create, void, expire (SPEC §9) — the billing half.

Every change of a grant's `remaining` writes its ledger entry in the same
statement or transaction. Each of these runs inside a transaction opened by
its caller (alerts/services/credits.py, which also evaluates the balance
alerts), after the caller has locked the organization's total row for the
current period (`ledger.lock_organization_total`): that row is the lock of
the organization's balance, so that a balance "crossing" is seen by exactly
one writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Min, Q

from accounts.models import Organization
from billing.grants import active_at
from billing.idempotency import fingerprint, key_reused
from billing.models import (
    GRANT_PRIORITY_DEFAULT,
    BalanceCheck,
    CreditGrant,
    CreditLedgerEntry,
    GrantKind,
    LedgerEntryType,
)
from billing.periods import organization_period
from config.credits import format_credits
from config.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class GrantInput:
    kind: str
    credits: Decimal
    priority: int = GRANT_PRIORITY_DEFAULT
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    note: str = ""
    idempotency_key: str = ""

    def fingerprint(self, effective_at: datetime) -> str:
        return fingerprint(
            {
                "op": "credit_grant",
                "kind": self.kind,
                "credits": format_credits(self.credits),
                "priority": self.priority,
                "effective_at": None if self.effective_at is None else effective_at.isoformat(),
                "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
                "note": self.note,
            }
        )


def grant_validate(grant: GrantInput, *, now: datetime) -> datetime:
    """The grant's `effective_at` (now by default), or 422 naming the field."""
    if grant.kind not in GrantKind.values:
        raise InvalidInput(
            f"kind: must be one of {', '.join(GrantKind.values)}.", code="invalid", field="kind"
        )
    if grant.credits <= 0:
        raise InvalidInput("credits: must be greater than 0.", code="invalid", field="credits")
    if not 1 <= grant.priority <= 100:
        raise InvalidInput("priority: must be between 1 and 100.", code="invalid", field="priority")
    effective_at = grant.effective_at or now
    if grant.expires_at is not None and grant.expires_at <= effective_at:
        raise InvalidInput(
            "expires_at: must be after effective_at.", code="invalid", field="expires_at"
        )
    return effective_at


def grant_replayed(
    *, organization: Organization, grant: GrantInput, now: datetime
) -> CreditGrant | None:
    """The grant an earlier request made with this idempotency key, or None;
    409 if the key came with another body.
    """
    if not grant.idempotency_key:
        return None
    earlier = CreditGrant.objects.filter(
        organization=organization, idempotency_key=grant.idempotency_key
    ).first()
    if earlier is None:
        return None
    if earlier.fingerprint != grant.fingerprint(grant.effective_at or earlier.effective_at):
        raise key_reused(grant.idempotency_key)
    return earlier


def grant_insert(
    *, organization: Organization, grant: GrantInput, now: datetime
) -> CreditGrant | None:
    """Insert the grant and its `grant` ledger entry; None if a concurrent
    request took its idempotency key first (the caller replays that one).
    Must run inside the caller's transaction.
    """
    effective_at = grant_validate(grant, now=now)
    row = CreditGrant(
        organization=organization,
        kind=grant.kind,
        credits=grant.credits,
        remaining=grant.credits,
        priority=grant.priority,
        effective_at=effective_at,
        expires_at=grant.expires_at,
        note=grant.note,
        idempotency_key=grant.idempotency_key,
        fingerprint=grant.fingerprint(effective_at) if grant.idempotency_key else "",
        created_at=now,
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        if grant.idempotency_key:
            return None
        raise
    CreditLedgerEntry.objects.create(
        organization=organization,
        grant=row,
        type=LedgerEntryType.GRANT,
        credits=row.credits,
        at=now,
    )
    balance_kept(organization=organization, now=now)
    first = _first_moment(row, now)
    if first is not None:
        check_due_by(organization=organization, moment=first)
    return row


def _first_moment(grant: CreditGrant, now: datetime) -> datetime | None:
    """When the grant next changes the balance or calls for a notice."""
    moments = [grant.effective_at] if grant.effective_at > now else []
    if grant.expires_at is not None:
        moments.append(max(grant.expires_at - expiry_notice_ahead(), now))
    return min(moments) if moments else None


def expiry_notice_ahead() -> timedelta:
    return timedelta(days=settings.GRANT_EXPIRY_NOTICE_DAYS)


def balance_kept(*, organization: Organization, now: datetime) -> None:
    """From now on, writes keep the organization's credit balance."""
    if organization.credit_balance_kept_since is None:
        Organization.objects.filter(pk=organization.pk, credit_balance_kept_since=None).update(
            credit_balance_kept_since=now
        )
        organization.credit_balance_kept_since = now


def check_due_by(*, organization: Organization, moment: datetime) -> None:
    """Make sure the periodic job looks at the organization by `moment`."""
    updated = BalanceCheck.objects.filter(
        Q(due_at__isnull=True) | Q(due_at__gt=moment), organization=organization
    ).update(due_at=moment)
    if not updated and not BalanceCheck.objects.filter(organization=organization).exists():
        BalanceCheck.objects.get_or_create(organization=organization, defaults={"due_at": moment})


def next_check_at(*, organization: Organization, now: datetime, watched: bool) -> datetime | None:
    """The next moment the balance changes with time alone: a grant becoming
    effective, a grant's expiry notice or expiry, and, when alerts or a
    top-up watch the balance and there is an allowance, the period's end.
    """
    ahead = expiry_notice_ahead()
    found = CreditGrant.objects.filter(
        organization=organization, voided_at__isnull=True, expired_at__isnull=True
    ).aggregate(
        effective=Min("effective_at", filter=Q(effective_at__gt=now)),
        expiry=Min("expires_at"),
        notice=Min(
            F("expires_at") - ahead,
            filter=Q(
                expires_at__gt=now + ahead, expiry_notice_sent_at__isnull=True, remaining__gt=0
            ),
        ),
    )
    moments = [found["effective"], found["expiry"], found["notice"]]
    if watched and organization.credit_allowance is not None:
        moments.append(organization_period(organization, now).end)
    due = [moment for moment in moments if moment is not None]
    return min(due) if due else None


def grant_get(*, organization: Organization, grant_id: int) -> CreditGrant:
    grant = CreditGrant.objects.filter(organization=organization, pk=grant_id).first()
    if grant is None:
        raise NotFound(f"No credit grant {grant_id} in this organization.", code="not_found")
    return grant


def grant_void(
    *, organization: Organization, grant_id: int, now: datetime
) -> tuple[CreditGrant, Decimal]:
    """Set the grant's `remaining` to 0 at once; returns it and the credits
    voided (0 if it was voided already: voiding twice changes nothing).
    """
    grant = (
        CreditGrant.objects.select_for_update()
        .filter(organization=organization, pk=grant_id)
        .first()
    )
    if grant is None:
        raise NotFound(f"No credit grant {grant_id} in this organization.", code="not_found")
    if grant.voided_at is not None:
        return grant, Decimal(0)
    voided = grant.remaining
    grant.remaining = Decimal(0)
    grant.voided_at = now
    grant.save(update_fields=["remaining", "voided_at"])
    if voided:
        CreditLedgerEntry.objects.create(
            organization=organization,
            grant=grant,
            type=LedgerEntryType.VOID,
            credits=-voided,
            at=now,
        )
    return grant, voided


def grants_expire(*, organization: Organization, now: datetime) -> Decimal:
    """Write the expiry of every grant of the organization that expired by
    `now` and is not written yet: its `remaining` to 0, an `expiry` entry.
    Once, however many jobs run it: the conditional UPDATE is the claim.
    Returns the credits that expired.
    """
    expired = list(
        CreditGrant.objects.select_for_update()
        .filter(
            organization=organization,
            expires_at__lte=now,
            expired_at__isnull=True,
        )
        .order_by("priority", F("expires_at").asc(nulls_last=True), "created_at", "id")
    )
    total = Decimal(0)
    entries = []
    for grant in expired:
        if grant.remaining and grant.voided_at is None:
            entries.append(
                CreditLedgerEntry(
                    organization=organization,
                    grant=grant,
                    type=LedgerEntryType.EXPIRY,
                    credits=-grant.remaining,
                    at=grant.expires_at or now,
                )
            )
            total += grant.remaining
    if expired:
        CreditGrant.objects.filter(pk__in=[g.pk for g in expired]).update(
            remaining=0, expired_at=now
        )
        CreditLedgerEntry.objects.bulk_create(entries)
    return total


def grants_due_for_notice(*, organization: Organization, now: datetime) -> list[CreditGrant]:
    """Grants expiring within the notice window with credits left, not told
    yet; claimed here (marked told) so that two jobs tell once.
    """
    candidates = list(
        CreditGrant.objects.filter(
            active_at(now),
            organization=organization,
            expires_at__isnull=False,
            expires_at__lte=now + expiry_notice_ahead(),
            expiry_notice_sent_at__isnull=True,
        ).order_by("expires_at", "id")
    )
    claimed = []
    for grant in candidates:
        if CreditGrant.objects.filter(pk=grant.pk, expiry_notice_sent_at__isnull=True).update(
            expiry_notice_sent_at=now
        ):
            claimed.append(grant)
    return claimed
