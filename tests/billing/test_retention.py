"""Retention of consume answers (SPEC §16): idempotency keys are honoured for
IDEMPOTENCY_RETENTION_DAYS (35 at least), then their answers are pruned by a
beat task; the usage ledger is kept, so a retry that comes after its answer
was pruned is still not counted twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings

from billing.models import ConsumeAnswer, UsageEvent
from billing.retention import consume_answers_prune
from tests.fixtures import run_at_once
from tests.helpers import assert_error, post_consume, run_daily_task

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


def answers(organization, created_at, count, prefix="old"):
    ConsumeAnswer.objects.bulk_create(
        ConsumeAnswer(
            organization=organization,
            idempotency_key=f"{prefix}-{n}",
            fingerprint="f",
            status_code=200,
            body={"allowed": True},
            created_at=created_at,
        )
        for n in range(count)
    )


def test_answers_older_than_the_window_go_and_the_ledger_stays(api, member):
    assert settings.IDEMPOTENCY_RETENTION_DAYS == 35
    for key, age in [
        ("36 days", timedelta(days=36)),
        ("35 days and a minute", timedelta(days=35, minutes=1)),
        ("a minute short of 35 days", timedelta(days=35) - timedelta(minutes=1)),
        ("today", timedelta(0)),
    ]:
        with time_machine.travel(NOW - age, tick=False):
            assert post_consume(api, member, 3, key=key).status_code == 200

    with time_machine.travel(NOW, tick=False):
        assert consume_answers_prune() == 2

    assert sorted(ConsumeAnswer.objects.values_list("idempotency_key", flat=True)) == [
        "a minute short of 35 days",
        "today",
    ]
    assert UsageEvent.objects.count() == 4


def test_a_longer_window_keeps_them_longer(api, member, settings):
    settings.IDEMPOTENCY_RETENTION_DAYS = 60
    with time_machine.travel(NOW - timedelta(days=59), tick=False):
        post_consume(api, member, 3, key="k")
    with time_machine.travel(NOW, tick=False):
        assert consume_answers_prune() == 0
    assert ConsumeAnswer.objects.count() == 1


def test_a_retry_after_its_answer_was_pruned_is_not_counted_twice(api, member):
    """The ledger still holds the allowed consume's key: the retry's insert
    conflicts, what it did is rolled back, and with no answer left to replay
    it is answered 409 `idempotency_key_expired`, never 500, never counted.
    """
    with time_machine.travel(NOW - timedelta(days=40), tick=False):
        first = post_consume(api, member, 3, key="k")
        assert first.status_code == 200
        # Within the window the same request gets the same answer back.
        assert post_consume(api, member, 3, key="k").json() == first.json()

    with time_machine.travel(NOW, tick=False):
        assert consume_answers_prune() == 1
        retry = post_consume(api, member, 3, key="k")
        summary = api.get("/api/v1/usage/summary").json()

    assert_error(retry, 409, "idempotency_key_expired", "idempotency_key")
    assert "more than 35 days ago" in retry.json()["error"]["message"]
    assert list(UsageEvent.objects.values_list("idempotency_key", "credits")) == [("k", Decimal(3))]
    assert summary["used"] == "0"  # nothing counted in the period of the retry
    assert not ConsumeAnswer.objects.exists()


def test_a_pruned_key_with_another_body_is_still_reused(api, member):
    with time_machine.travel(NOW - timedelta(days=40), tick=False):
        assert post_consume(api, member, 3, key="k").status_code == 200
    with time_machine.travel(NOW, tick=False):
        consume_answers_prune()
        other = post_consume(api, member, 4, key="k")
    assert_error(other, 409, "idempotency_key_reused", "idempotency_key")


def test_batches_and_running_twice(organization):
    answers(organization, NOW - timedelta(days=40), 7)
    answers(organization, NOW - timedelta(days=1), 2, prefix="new")

    with time_machine.travel(NOW, tick=False):
        assert consume_answers_prune(batch_size=3) == 7
        assert consume_answers_prune(batch_size=3) == 0

    assert ConsumeAnswer.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_share_the_work(organization):
    answers(organization, NOW - timedelta(days=40), 60)

    def prune() -> int:
        return consume_answers_prune(now=NOW, batch_size=5)

    counts = run_at_once(prune, prune)

    assert sum(counts) == 60
    assert not ConsumeAnswer.objects.exists()


def test_the_beat_schedule_runs_the_pruning(organization):
    answers(organization, NOW - timedelta(days=40), 2)
    run_daily_task("billing.tasks.prune_consume_answers", at=NOW)

    assert not ConsumeAnswer.objects.exists()
