"""The email provider and the webhook receiver down for minutes: every
notification is retried with backoff, each attempt recorded, and delivered
exactly once when they come back.

Time is scaled, not waited for: the workers' first retry comes after 0.1 s
instead of 10 s (NOTIFICATION_RETRY_BASE_SECONDS, doubling each time), so
the 6 s outage below is, at production timings, 10 minutes of downtime
(about 7 attempts per notification either way).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.services import (
    Api,
    Database,
    Provider,
    Stack,
    deliveries,
    seed,
    wait_until,
)
from tests.stubs import webhook_receiver

pytestmark = pytest.mark.faults

DOWN_SECONDS = 6.0


def test_provider_down_for_minutes_delivers_each_notification_once(
    stack: Stack, provider: Provider, database: Database
) -> None:
    with webhook_receiver() as receiver:
        stack.start_web()
        stack.start_worker()
        tenant = seed(
            stack.env,
            {
                "slug": "provider",
                "admins": 3,
                "alerts": [{"threshold": 5}, {"threshold": 10}],
                "webhook_url": f"{receiver.url}hooks",
            },
        )
        stack.ready()
        api = Api(stack.url, tenant["api_key"])

        # Down: first answering 503, then not answering at all (connections closed).
        provider.set_down(DOWN_SECONDS)
        receiver.fail_next = 10**6
        back_at = time.monotonic() + DOWN_SECONDS
        response = api.post("/usage", {"events": [{"idempotency_key": "a", "credits": 5}]})
        assert response.status_code == 202, response.text
        time.sleep(DOWN_SECONDS / 2)
        provider.set_down(back_at - time.monotonic(), drop=True)
        response = api.post("/usage", {"events": [{"idempotency_key": "b", "credits": 5}]})
        assert response.status_code == 202, response.text
        time.sleep(max(0.0, back_at - time.monotonic() - 0.2))
        assert provider.accepted() == [] and receiver.accepted() == []
        time.sleep(max(0.0, back_at - time.monotonic()))
        with receiver.lock:
            receiver.fail_next = 0
        failures = Counter(r.headers.get("x-stub-failure") for r in provider.received)
        assert failures["503"] >= 3 and failures["dropped"] >= 3, failures

        wait_until(lambda: database.unsent() == 0, seconds=60, what="every notification sent")
        notifications = database.notifications()
        assert len(notifications) == 8  # 2 firings x (3 admins + 1 webhook)
        taken = deliveries(provider, receiver)
        assert taken == Counter({n["uid"].hex: 1 for n in notifications}), taken
        # Retried, with every attempt sent and recorded.
        assert all(n["attempts"] > 1 for n in notifications), notifications
        emails = {n["uid"].hex: n["attempts"] for n in notifications if n["channel"] == "email"}
        assert provider.requests_per_notification() == Counter(emails)
        failed, succeeded = database.rows(
            "SELECT count(*) FILTER (WHERE NOT succeeded AND error <> ''),"
            " count(*) FILTER (WHERE succeeded) FROM alerts_deliveryattempt"
        )[0]
        assert (failed, succeeded) == (sum(n["attempts"] for n in notifications) - 8, 8)
        print(
            f"\nfaults: provider and receiver down {DOWN_SECONDS:g} s; {len(notifications)}"
            f" notifications delivered once each after {sum(n['attempts'] for n in notifications)}"
            " attempts"
        )
