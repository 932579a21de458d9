"""Deadlocks and serialization failures, retried inside the request (SPEC §16).

PostgreSQL ends one of two transactions that wait on each other with a
deadlock error (SQLSTATE 40P01), and a transaction that cannot be made
serializable with 40001. Neither says anything about the request: the
transaction was rolled back whole, so running it again is safe, and
idempotency keys make it safe even if the first attempt's answer was lost.
The writes that can meet them (consume, ingest, limit and alert changes)
run under `retry_on_conflict`, so the caller gets a normal answer.

The ledger takes its locks in one order (billing/ledger.py), so a deadlock
between consume and ingest should not happen at all: the retry is the net
under that rule, and every retry is logged as a warning so that one that
does happen gets looked at.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, connection

from config.errors import Conflict

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
RETRYABLE = frozenset({DEADLOCK_DETECTED, SERIALIZATION_FAILURE})
ATTEMPTS = 4
# The first retry waits up to this long, each next one up to twice as long:
# random, so that the two transactions that met do not meet again in step.
FIRST_BACKOFF_SECONDS = 0.02


class ConcurrentUpdate(Conflict):
    """Every attempt met a concurrent transaction: nothing was recorded, and
    the same request can be sent again as it is."""


def is_retryable(error: BaseException) -> bool:
    """Whether a database error is a deadlock or a serialization failure."""
    cause = error.__cause__ or error
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return code in RETRYABLE


def retry_on_conflict(write: Callable[P, R]) -> Callable[P, R]:
    """Run `write`, a service that opens its own transaction, again (up to
    `ATTEMPTS` times in all) when the database ends it with a deadlock or a
    serialization failure; 409 `concurrent_update` if the last attempt does.

    Inside a caller's transaction it runs once: the error has aborted that
    whole transaction, which only the caller can run again.
    """

    @functools.wraps(write)
    def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return write(*args, **kwargs)
        for number in range(1, ATTEMPTS + 1):
            try:
                return write(*args, **kwargs)
            except DatabaseError as error:
                if not is_retryable(error):
                    raise
                logger.warning(
                    "%s: attempt %d of %d met a concurrent transaction (%s)",
                    write.__qualname__,
                    number,
                    ATTEMPTS,
                    error.__cause__.__class__.__name__ if error.__cause__ else error,
                )
                if number == ATTEMPTS:
                    raise ConcurrentUpdate(
                        "The request met concurrent updates and nothing was recorded: "
                        "send it again.",
                        code="concurrent_update",
                    ) from error
                time.sleep(random.uniform(0, FIRST_BACKOFF_SECONDS * 2 ** (number - 1)))
        raise AssertionError("unreachable")  # the loop returns or raises

    return attempt
