"""A worker killed in the middle of sending: the delivery is redone once,
and never sends the email twice.

The provider stand-in holds the request, so that the kill lands while the
email is on the wire. The row stays claimed (`sending`) until its lease runs
out; then beat's sweep queues it again, and the next attempt, seeing one cut
short, first asks the provider whether it took the email (Postmark's message
search by metadata) before sending it. Timings are the tests' (lease 3 s
instead of 5 min, sweep every second).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.services import (
    Api,
    Database,
    Process,
    Provider,
    Stack,
    deliveries,
    seed,
    wait_until,
)
from tests.stubs import Received

pytestmark = pytest.mark.faults

LEASE = {"NOTIFICATION_CLAIM_LEASE_SECONDS": 3}
HOLD_SECONDS = 2.0  # below the lease: a live sender is never overtaken


def _pool_child(worker: Process) -> int:
    (child,) = wait_until(worker.children, seconds=10, what="the worker's pool process")
    return child


def _cross(api: Api, key: str) -> None:
    response = api.post("/usage", {"events": [{"idempotency_key": key, "credits": 1}]})
    assert response.status_code == 202, response.text


def _attempts(database: Database, uid: str) -> list[tuple[bool, bool]]:
    """(finished, succeeded) of each delivery attempt of one notification."""
    return [
        (finished, succeeded)
        for finished, succeeded in database.rows(
            "SELECT a.finished_at IS NOT NULL, a.succeeded FROM alerts_deliveryattempt a"
            " JOIN alerts_notification n ON n.id = a.notification_id WHERE n.uid = %s"
            " ORDER BY a.id",
            (uid,),
        )
    ]


def test_worker_killed_mid_send_is_redone_once(
    stack: Stack, provider: Provider, database: Database
) -> None:
    # One admin, an alert at each credit: each ingest below makes one email.
    stack.start_web()
    worker = stack.start_worker(concurrency=1, settings=LEASE)
    stack.start_beat()
    tenant = seed(stack.env, {"slug": "killed", "alerts": [{"threshold": 1}, {"threshold": 2}]})
    stack.ready()
    api = Api(stack.url, tenant["api_key"])

    # 1. The pool process is killed (as the OOM killer would) while the
    #    provider holds its request; the main process stays up.
    provider.hold_next, provider.hold_seconds = 1, HOLD_SECONDS
    _cross(api, "first")
    wait_until(lambda: provider.arrivals == 1, seconds=10, what="the email on the wire")
    os.kill(_pool_child(worker), signal.SIGKILL)
    wait_until(lambda: database.unsent() == 0, seconds=30, what="the first email redone")
    assert "WorkerLostError" in worker.log_text()  # and re-queued: reject_on_worker_lost

    # 2. The whole worker is killed (machine lost) while sending; a new one starts.
    provider.hold_next = 1
    _cross(api, "second")
    wait_until(lambda: provider.arrivals == 3, seconds=10, what="the second email on the wire")
    worker.kill()
    stack.start_worker(concurrency=1, settings=LEASE)
    stack.ready()
    wait_until(lambda: database.unsent() == 0, seconds=30, what="the second email redone")

    notifications = database.notifications()
    assert len(notifications) == 2
    assert deliveries(provider) == {n["uid"].hex: 1 for n in notifications}
    assert provider.outcomes() == {"abandoned": 2, "accepted": 2}
    assert provider.searches == 2  # each redo asked first: the provider had not taken it
    for notification in notifications:
        assert notification["attempts"] == 2
        # The killed attempt is closed as cut short; the second one went through.
        assert _attempts(database, notification["uid"]) == [(True, False), (True, True)]
    print("\nfaults: 2 workers killed mid-send; 2 emails redone, each sent once")


def test_worker_killed_after_the_provider_accepted_sends_once(
    stack: Stack, provider: Provider, database: Database
) -> None:
    """The window of `docs/alerts.md`: the provider took the email, and the
    worker dies before it could mark the row sent (here: before it even read
    the answer). Redoing the delivery must not send the email again.
    """
    stack.start_web()
    worker = stack.start_worker(concurrency=1, settings=LEASE)
    stack.start_beat()
    tenant = seed(stack.env, {"slug": "accepted", "alerts": [{"threshold": 1}]})
    stack.ready()
    api = Api(stack.url, tenant["api_key"])

    def kill_the_sender(received: Received) -> None:
        os.kill(_pool_child(worker), signal.SIGKILL)

    provider.before_answer = kill_the_sender
    _cross(api, "first")
    wait_until(lambda: database.unsent() == 0, seconds=30, what="the notification settled")
    (notification,) = database.notifications()
    assert deliveries(provider) == {notification["uid"].hex: 1}, "the email was sent twice"
    assert provider.outcomes() == {"accepted": 1}
    assert provider.searches == 1  # found: recorded as sent, not sent again
    assert notification["status"] == "sent" and notification["attempts"] == 2
    assert _attempts(database, notification["uid"]) == [(True, False), (True, True)]
    print("\nfaults: a worker killed after the provider took the email; sent once")
    ((_, message_id),) = provider.messages
    assert (
        database.value(
            "SELECT provider_message_id FROM alerts_notification WHERE uid = %s",
            (notification["uid"],),
        )
        == message_id
    )
