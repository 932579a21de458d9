"""The gate's rule (SPEC §3) and the one test of "over budget".

`gate_decide` says whether spending a cost now is allowed, and why not;
the database applies the same rule atomically with the write (the WHERE of
billing/ledger.py's upserts), and `usage_consume` explains a refusal by
asking `gate_decide` again. `over_budget` is what "at its limit" means
wherever it is asked: the member pages, the alerts (alerts/services/rules.py)
and the marks the ledger keeps (`limit_reached_at`, written in SQL as
`counted >= limit`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils.dateparse import parse_datetime

from billing.periods import Period
from config.credits import format_credits, readable_credits


def over_budget(used: Decimal, budget: Decimal | None) -> bool:
    """Whether usage is at or past a budget (a member's limit, an allowance,
    an alert's threshold). No budget: never.
    """
    return budget is not None and used >= budget


USER_LIMIT_REACHED = "user_limit_reached"
ORGANIZATION_CREDITS_EXHAUSTED = "organization_credits_exhausted"
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
    message: str = ""
    balance: Decimal | None = None  # the organization's, when it is what refuses

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
        if self.balance is not None:
            answer["balance"] = format_credits(self.balance)
        if self.allowed:
            answer["remaining"] = None if self.remaining is None else format_credits(self.remaining)
        answer["resets_at"] = self.resets_at.isoformat().replace("+00:00", "Z")
        return answer

    @classmethod
    def allowing(cls, *, used: Decimal, limit: Decimal | None, period: Period) -> Decision:
        """Allowed: the member's counted usage and limit, reset at the period's end."""
        return cls(allowed=True, reason=None, used=used, limit=limit, resets_at=period.end)

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
            balance=Decimal(answer["balance"]) if answer.get("balance") is not None else None,
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
    balance: Decimal | None,
    block_when_exhausted: bool,
    period: Period,
) -> Decision:
    """SPEC §3 and §9: allowed iff (the source is excluded, or the member has
    no limit, or counted + cost <= limit) and (the organization does not
    block, or has no balance, or cost <= its balance: the allowance left this
    period plus its active grants, billing/balance.py). The member's limit is
    the reason given when both refuse. `used` is as it stands, before `cost`;
    a refusal for the organization says `limit` = used + balance.
    """
    if counts and would_exceed(member_counted, cost, member_limit):
        return _refused(USER_LIMIT_REACHED, member_counted, member_limit, period)
    if block_when_exhausted and would_exceed(ZERO, cost, balance):
        assert balance is not None
        refusal = _refused(
            ORGANIZATION_CREDITS_EXHAUSTED,
            organization_used_now,
            organization_used_now + balance,
            period,
        )
        return replace(refusal, balance=balance)
    return Decision.allowing(used=member_counted, limit=member_limit, period=period)


def would_exceed(used: Decimal, cost: Decimal, budget: Decimal | None) -> bool:
    """Whether spending `cost` would take usage past a budget (reaching it
    exactly is allowed). No budget: never.
    """
    return budget is not None and used + cost > budget


REFUSALS = {
    USER_LIMIT_REACHED: (
        "You have used {used} of your {limit} credit limit for this billing period. "
        "It resets on {day}."
    ),
    ORGANIZATION_CREDITS_EXHAUSTED: (
        "Your organization has used {used} of its {limit} credits for this billing period. "
        "Credits reset on {day}."
    ),
}


def _refused(reason: str, used: Decimal, limit: Decimal | None, period: Period) -> Decision:
    assert limit is not None
    return Decision(
        allowed=False,
        reason=reason,
        used=used,
        limit=limit,
        resets_at=period.end,
        message=REFUSALS[reason].format(
            used=readable_credits(used), limit=readable_credits(limit), day=_day(period.end)
        ),
    )
