"""Holds in-process, for host views (SPEC §13): hold, do the work, settle
with what it cost; release if the work fails.

    with credit_hold(membership, credits=Decimal(20), source="assistant") as hold:
        answer = run_model(prompt)
        hold.settle(answer.cost)

A refused hold raises `HoldRefused` (its `decision` is the consume's
refusal, for the blocked notice) before the block runs. An exception in the
block releases the hold and goes on. A block that ends without settling
settles for the credits held: the estimate is the price of work that did not
say what it cost.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Generic, TypeVar

from accounts.models import Membership
from alerts.services.holds import hold_create, hold_release, hold_settle
from billing.models import HOLD_EXPIRES_IN_DEFAULT, CreditHold, HoldStatus, Source
from billing.rules import Decision

T = TypeVar("T")


class HoldRefused(Exception):
    """The gate refused the hold: nothing is held."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision


class HeldCredits:
    """An open hold, as a host view holds it: settle or release it once."""

    def __init__(self, hold: CreditHold, answer: dict[str, object]) -> None:
        self.hold = hold
        self.answer = answer  # the hold's API answer: used, limit, remaining with it

    @property
    def credits(self) -> Decimal:
        return self.hold.credits

    @property
    def closed(self) -> bool:
        return self.hold.status != HoldStatus.HELD

    def settle(self, credits: Decimal) -> CreditHold:
        """Record what the work cost (never refused) and free the hold."""
        self.hold = hold_settle(
            organization=self.hold.organization, hold_id=self.hold.pk, credits=credits
        )
        return self.hold

    def release(self) -> CreditHold:
        """Free the hold and record nothing."""
        self.hold = hold_release(organization=self.hold.organization, hold_id=self.hold.pk)
        return self.hold

    def finish(self) -> None:
        """The work is done: settle for the credits held unless it said what
        it cost (settled or released) already.
        """
        if not self.closed:
            self.settle(self.credits)

    def abandon(self) -> None:
        """The work failed or was cut short: release unless already closed."""
        if not self.closed:
            self.release()

    @contextmanager
    def closing(self) -> Iterator[HeldCredits]:
        """Release on an exception, settle for the held credits if the block
        did not settle; whatever the block closed stays closed.
        """
        try:
            yield self
        except BaseException:
            self.abandon()
            raise
        self.finish()

    def closing_after(self, chunks: Iterable[T]) -> HeldStream[T]:
        """`chunks` (a streamed response's), closing the hold once they end:
        a stream cut short (an error, the client gone: `close()` before the
        end, even before the first chunk) releases it.
        """
        return HeldStream(self, chunks)


class HeldStream(Generic[T]):
    """The chunks of work done under a hold; see `HeldCredits.closing_after`."""

    def __init__(self, held: HeldCredits, chunks: Iterable[T]) -> None:
        self._held = held
        self._chunks = self._closing(chunks)

    def _closing(self, chunks: Iterable[T]) -> Generator[T, None, None]:
        with self._held.closing():
            yield from chunks

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._chunks)

    def close(self) -> None:
        """What a WSGI server calls once done with the response. A generator
        closed before it started runs nothing, so the release is here too.
        """
        self._chunks.close()
        self._held.abandon()


def hold_credits(
    membership: Membership,
    *,
    credits: Decimal,
    source: str = Source.ASSISTANT,
    expires_in: int = HOLD_EXPIRES_IN_DEFAULT,
    idempotency_key: str | None = None,
) -> HeldCredits:
    """Hold `credits` for `membership`; `HoldRefused` if the gate refuses."""
    organization = membership.organization
    answer = hold_create(
        organization=organization,
        membership=membership,
        credits=credits,
        source=source,
        expires_in=expires_in,
        idempotency_key=idempotency_key,
    )
    if not answer.allowed:
        raise HoldRefused(answer.decision())
    return HeldCredits(answer.hold(organization), answer.body)


@contextmanager
def credit_hold(
    membership: Membership,
    *,
    credits: Decimal,
    source: str = Source.ASSISTANT,
    expires_in: int = HOLD_EXPIRES_IN_DEFAULT,
    idempotency_key: str | None = None,
) -> Iterator[HeldCredits]:
    """Hold `credits` around a block of work (see the module's docstring)."""
    held = hold_credits(
        membership,
        credits=credits,
        source=source,
        expires_in=expires_in,
        idempotency_key=idempotency_key,
    )
    with held.closing():
        yield held
