"""No 5xx from concurrency (SPEC §16), with real concurrent requests: each
thread sends through the API on its own database connection.

Two things are proved apart. The lock order (billing/ledger.py): batches
sharing keys in any order, and an ingest and a consume of one key at once,
never deadlock at all, so these tests also assert that nothing was retried.
The retry (config/dbretry.py): a deadlock made on purpose, by a transaction
that takes the same rows in the other order, is retried inside the request,
which answers as if nothing had happened, and counts once.

Two tests pin the moment at which requests meet, so that a wrong lock
order deadlocks in every round rather than by chance: batches are slowed in
the middle of their ledger insert (a trigger), and a batch pauses between
its keys and its totals until a consume waits (a hook on
`billing.event_ledger.insert_events`). One more leaves the timing to chance, over
many moments.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import QuerySet, Sum

from accounts.models import Membership, Organization
from accounts.services import api_key_create
from billing import event_ledger
from billing.models import DailyUsage, MemberUsage, OrganizationUsage, SourceUsage, UsageEvent
from config import dbretry
from tests.factories import MembershipFactory
from tests.fixtures import ApiClient, run_at_once
from tests.helpers import post_consume, post_usage

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
BATCH = 1000  # the API's largest: the longer a batch holds its keys, the likelier a deadlock
SOURCES = ("assistant", "agent", "workflow")


def _clients(organization: Organization, count: int) -> list[ApiClient]:
    """One client per thread (a Django test client is not shared across threads)."""
    _, raw_key = api_key_create(organization=organization)
    return [ApiClient(raw_key) for _ in range(count)]


def _batch(prefix: str, members: list[Membership]) -> list[dict[str, Any]]:
    return [
        {
            "idempotency_key": f"{prefix}-{index:04d}",
            "user": members[index % len(members)].external_id,
            "credits": "1.5",
            "source": SOURCES[index % len(SOURCES)],
        }
        for index in range(BATCH)
    ]


@pytest.fixture(autouse=True)
def _retries_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The retries' warnings reach caplog whatever an earlier test did to the
    root logger (a Celery worker started in-process sets it to ERROR)."""
    caplog.set_level(logging.WARNING, logger=dbretry.logger.name)


def _retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == dbretry.logger.name]


def _sums(rows: QuerySet[Any], by: str, *, amount: str = "used") -> dict[Any, Decimal]:
    """{value of `by`: sum of `amount`} over `rows`."""
    return dict(rows.values(by).annotate(total=Sum(amount)).values_list(by, "total"))


def assert_totals_equal_the_ledger(organization: Organization) -> Decimal:
    """Every running total is the sum of the ledger's rows: nothing counted twice."""
    events = UsageEvent.objects.filter(organization=organization, meter="credits")
    total = events.aggregate(total=Sum("credits"))["total"] or D(0)
    by_member = _sums(events.exclude(membership=None), "membership_id", amount="credits")
    by_source = _sums(events, "source", amount="credits")
    assert OrganizationUsage.objects.filter(organization=organization).aggregate(total=Sum("used"))[
        "total"
    ] == (total or None)
    assert DailyUsage.objects.filter(organization=organization).aggregate(total=Sum("used"))[
        "total"
    ] == (total or None)
    assert _sums(MemberUsage.objects.filter(organization=organization), "membership_id") == (
        by_member
    )
    assert _sums(SourceUsage.objects.filter(organization=organization), "source") == by_source
    return total


@pytest.fixture
def slow_middle_row() -> Iterator[None]:
    """The ledger row of each batch's middle key takes 0.1 s to insert.

    Left to chance, requests sent at once reach the database up to tens of
    milliseconds apart (each first parses its 1,000 events), longer than an
    insert takes, and a wrong lock order deadlocked in one round out of
    three. Slowed in the middle, every batch holds half its keys while the
    others insert theirs: a wrong order deadlocks in every round. Only the
    timing changes.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_slow_middle_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.idempotency_key LIKE '%-{BATCH // 2:04d}' THEN PERFORM pg_sleep(0.1); END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_slow_middle_row BEFORE INSERT ON {UsageEvent._meta.db_table}
                FOR EACH ROW EXECUTE FUNCTION test_slow_middle_row();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            f"DROP TRIGGER test_slow_middle_row ON {UsageEvent._meta.db_table};"
            " DROP FUNCTION test_slow_middle_row();"
        )


def test_batches_sharing_keys_in_any_order_never_deadlock(organization, caplog, slow_middle_row):
    """Three batches of the same 1,000 events at once, ascending, descending
    and shuffled: each key is recorded once, every answer is 202.
    """
    members = MembershipFactory.create_batch(4, organization=organization)
    clients = _clients(organization, 3)
    rounds = 5
    for round_number in range(rounds):
        events = _batch(f"r{round_number}", members)
        shuffled = random.Random(round_number).sample(events, len(events))
        orders = [events, events[::-1], shuffled]
        answers = run_at_once(
            *[
                lambda client=client, order=order: client.post("/api/v1/usage", {"events": order})
                for client, order in zip(clients, orders, strict=True)
            ]
        )
        statuses = [answer.status_code for answer in answers]
        assert statuses == [202, 202, 202], (round_number, [a.content[:300] for a in answers])
        bodies = [answer.json() for answer in answers]
        assert sum(body["accepted"] for body in bodies) == BATCH
        assert sum(body["duplicates"] for body in bodies) == 2 * BATCH
    assert UsageEvent.objects.count() == rounds * BATCH
    assert assert_totals_equal_the_ledger(organization) == D("1.5") * rounds * BATCH
    assert _retries(caplog) == []


def test_a_consume_of_a_key_a_batch_holds(organization, caplog, monkeypatch):
    """The batch has inserted its keys (not committed) and not yet moved a
    total when a consume of one of its keys comes: the consume waits for the
    key, the batch goes on, and the consume gets 409. With the consume's key
    taken after the totals, it held the member's total while waiting for the
    key the batch held, and the batch then waited for that total: deadlock,
    500, in every round.
    """
    member = MembershipFactory(organization=organization)
    ingester, consumer = _clients(organization, 2)
    keys_held, release = threading.Event(), threading.Event()
    insert_events = event_ledger.insert_events

    def insert_then_pause(**kwargs: Any) -> set[str]:
        inserted = insert_events(**kwargs)
        if len(kwargs["events"]) > 1:  # a batch, not a consume
            keys_held.set()
            release.wait(timeout=20)
        return inserted

    monkeypatch.setattr(event_ledger, "insert_events", insert_then_pause)
    rounds = 3
    for round_number in range(rounds):
        keys_held.clear()
        release.clear()
        events = _batch(f"held{round_number}", [member])

        def consume(key: str = events[-1]["idempotency_key"]) -> Any:
            assert keys_held.wait(timeout=20)
            return post_consume(consumer, member, 2, key=key)

        def release_once_the_consume_waits() -> None:
            assert keys_held.wait(timeout=20)
            _wait_until_a_request_waits()
            release.set()

        ingested, consumed, _ = run_at_once(
            lambda events=events: post_usage(ingester, *events),
            consume,
            release_once_the_consume_waits,
        )
        assert (ingested.status_code, consumed.status_code) == (202, 409), (
            round_number,
            ingested.content[:300],
            consumed.content[:300],
        )
        assert consumed.json()["error"]["code"] == "idempotency_key_reused"
    assert UsageEvent.objects.count() == rounds * BATCH
    assert assert_totals_equal_the_ledger(organization) == D("1.5") * rounds * BATCH
    assert _retries(caplog) == []


def test_an_ingest_and_a_consume_of_one_key_at_any_moment(organization, caplog):
    """A consume of the key a batch starts with, sent at moments spread over
    the batch's own duration: one of them gets the key (the other 409), and
    never a 500.
    """
    member = MembershipFactory(organization=organization)
    ingester, consumer = _clients(organization, 2)
    started = time.monotonic()
    post_usage(ingester, *_batch("warm", [member]), status=202)
    duration = time.monotonic() - started
    rounds = 12
    winners = []
    for round_number in range(rounds):
        events = _batch(f"c{round_number}", [member])
        shared_key = events[0]["idempotency_key"]
        delay = duration * round_number / rounds

        def consume(delay: float = delay, key: str = shared_key) -> Any:
            time.sleep(delay)
            return post_consume(consumer, member, 2, key=key)

        ingested, consumed = run_at_once(
            lambda events=events: post_usage(ingester, *events), consume
        )
        statuses = (ingested.status_code, consumed.status_code)
        assert statuses in {(202, 409), (409, 200)}, (
            round_number,
            ingested.content[:300],
            consumed.content[:300],
        )
        winners.append("ingest" if statuses == (202, 409) else "consume")
        loser = consumed if statuses == (202, 409) else ingested
        assert loser.json()["error"]["code"] == "idempotency_key_reused"
    accepted_batches = winners.count("ingest")
    assert UsageEvent.objects.count() == BATCH * (1 + accepted_batches) + winners.count("consume")
    assert assert_totals_equal_the_ledger(organization) == (
        D("1.5") * BATCH * (1 + accepted_batches) + 2 * winners.count("consume")
    )
    assert _retries(caplog) == []


def _wait_until_a_request_waits() -> None:
    """Until a connection to this test database waits for another's lock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.005)
    raise AssertionError("no request waited for a lock")


def _deadlock_on_purpose(
    organization: Organization, member: Membership, request: Callable[[], Any]
) -> tuple[Any, list[BaseException]]:
    """Send `request` (a consume or an ingest of `member`) while another
    transaction holds the organization's total and then asks for the
    member's: the request holds the member's row and waits for the
    organization's, so PostgreSQL ends one of them. The request began
    waiting first, so its deadlock check runs first and it is the one ended.
    """
    holding, request_waits = threading.Event(), threading.Event()
    holder_errors: list[BaseException] = []
    answer: list[Any] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                list(
                    OrganizationUsage.objects.select_for_update().filter(organization=organization)
                )
                holding.set()
                assert request_waits.wait(timeout=20)
                list(MemberUsage.objects.select_for_update().filter(membership=member))
        except BaseException as error:
            holder_errors.append(error)
        finally:
            connection.close()

    def send() -> None:
        try:
            assert holding.wait(timeout=20)
            answer.append(request())
        finally:
            connection.close()

    threads = [threading.Thread(target=hold), threading.Thread(target=send)]
    for thread in threads:
        thread.start()
    _wait_until_a_request_waits()
    request_waits.set()
    for thread in threads:
        thread.join(timeout=30)
    return answer[0], holder_errors


def _consume(client: ApiClient, member: Membership, key: str) -> Callable[[], Any]:
    return lambda: post_consume(client, member, 3, key=key)


def _ingest(client: ApiClient, member: Membership, key: str) -> Callable[[], Any]:
    return lambda: post_usage(
        client, {"idempotency_key": key, "user": member.external_id, "credits": 3}
    )


@pytest.mark.parametrize(("write", "status"), [(_consume, 200), (_ingest, 202)])
def test_a_deadlock_is_retried_inside_the_request_and_counted_once(
    organization, caplog, write, status
):
    member = MembershipFactory(organization=organization)
    (client,) = _clients(organization, 1)
    assert _consume(client, member, "first")().status_code == 200  # the rows to lock
    answer, holder_errors = _deadlock_on_purpose(
        organization, member, write(client, member, "second")
    )
    assert holder_errors == []  # the request was the one PostgreSQL ended
    assert answer.status_code == status, answer.content
    service = "usage_consume" if write is _consume else "usage_ingest"
    assert [record.getMessage() for record in _retries(caplog)] == [
        f"{service}: attempt 1 of {dbretry.ATTEMPTS} met a concurrent transaction"
        " (DeadlockDetected)"
    ]
    assert assert_totals_equal_the_ledger(organization) == D(6)
    assert UsageEvent.objects.count() == 2


def test_when_every_attempt_deadlocks_the_answer_is_409_and_nothing_is_recorded(
    organization, caplog, monkeypatch
):
    monkeypatch.setattr(dbretry, "ATTEMPTS", 1)
    member = MembershipFactory(organization=organization)
    (client,) = _clients(organization, 1)
    assert _consume(client, member, "first")().status_code == 200
    answer, holder_errors = _deadlock_on_purpose(
        organization, member, _consume(client, member, "second")
    )
    assert holder_errors == []
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "concurrent_update"
    assert "send it again" in answer.json()["error"]["message"]
    assert assert_totals_equal_the_ledger(organization) == D(3)
    assert not UsageEvent.objects.filter(idempotency_key="second").exists()
    again = _consume(client, member, "second")()  # the same request, sent again
    assert again.status_code == 200
    assert assert_totals_equal_the_ledger(organization) == D(6)
