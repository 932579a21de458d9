"""Redis stopped while usage comes in: ingest and consume keep answering from
PostgreSQL alone, promptly; the firings and their outbox rows are committed;
once Redis is back (empty: what it held is lost), every pending notification
is delivered exactly once, by the worker that stayed up and beat's sweep.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest

from tests.faults.services import (
    Api,
    Database,
    PrivateRedis,
    Provider,
    Stack,
    deliveries,
    ledger_figures,
    seed,
    wait_until,
)
from tests.stubs import webhook_receiver

pytestmark = pytest.mark.faults

# An ingest takes ~20 ms here. With Redis down each outbox row costs its
# publish attempt, and a write may queue many rows: it must still answer well
# inside any client's timeout.
PROMPT_SECONDS = 2.0


def test_redis_stopped_while_usage_is_ingested(
    stack: Stack, redis: PrivateRedis, provider: Provider, database: Database
) -> None:
    with webhook_receiver() as receiver:
        stack.start_web()
        stack.start_worker()
        stack.start_beat()
        tenant = seed(
            stack.env,
            {
                "slug": "redis",
                "admins": 6,
                "members": 2,
                # all admins at 1 and 10 credits, admin-0 alone at 20
                "alerts": [{"threshold": 1}, {"threshold": 10}, {"threshold": 20, "admins": [0]}],
                "webhook_url": f"{receiver.url}hooks",
            },
        )
        stack.ready()
        api = Api(stack.url, tenant["api_key"])
        spent = Decimal(0)

        # Redis up: crossing 1 credit mails the 6 admins and calls the webhook.
        response = api.post("/usage", {"events": [{"idempotency_key": "up", "credits": 1}]})
        assert response.status_code == 202, response.text
        spent += 1
        wait_until(
            lambda: len(deliveries(provider, receiver)) == 7 and database.unsent() == 0,
            seconds=30,
            what="the first firing's 7 notifications",
        )

        redis.stop()
        took: list[float] = []

        def timed(path: str, body: dict[str, object], expected: int) -> None:
            started = time.monotonic()
            answer = api.post(path, body, timeout=30)
            took.append(time.monotonic() - started)
            assert answer.status_code == expected, answer.text

        for batch in range(3):  # 3 x 3 credits: the last batch crosses 10 (7 notifications)
            events = [
                {"idempotency_key": f"down-{batch}-{n}", "credits": 1, "user": f"member-{n % 2}"}
                for n in range(3)
            ]
            timed("/usage", {"events": events}, 202)
            spent += 3
        for n in range(10):  # the 10th consume crosses 20 (admin-0 and the webhook)
            body = {"user": "member-1", "credits": "1", "idempotency_key": f"consume-{n}"}
            timed("/consume", body, 200)
            spent += 1
        timed("/usage", {"events": [{"idempotency_key": "down-last", "credits": "0.5"}]}, 202)
        spent += Decimal("0.5")

        assert max(took) < PROMPT_SECONDS, f"answers took {[round(t, 2) for t in took]} s"
        # Committed on PostgreSQL alone: the ledger, the firings, the outbox.
        figures = ledger_figures(database, tenant["organization_id"])
        assert figures["events"] == figures["organization"] == figures["days"] == spent
        assert len(figures["keys"]) == 21 and set(figures["keys"].values()) == {1}
        assert database.value("SELECT count(*) FROM alerts_firing") == 3
        pending = [n for n in database.notifications() if n["status"] != "sent"]
        assert len(pending) == 9  # 6 emails + 1 webhook at 10 credits, 1 + 1 at 20
        assert all(n["status"] == "pending" and n["attempts"] == 0 for n in pending)
        assert len(deliveries(provider, receiver)) == 7  # nothing could go out

        redis.start()  # same port, empty
        back_at = time.monotonic()
        wait_until(
            lambda: database.unsent() == 0,
            seconds=60,
            what="every pending notification to be sent once Redis is back",
        )
        notifications = database.notifications()
        taken = deliveries(provider, receiver)
        assert taken == Counter({n["uid"].hex: 1 for n in notifications}), taken
        assert len(notifications) == 16
        assert all(n["attempts"] == 1 for n in notifications)
        recovered_in = time.monotonic() - back_at
        time.sleep(2)  # two more sweeps: nothing goes out again
        assert deliveries(provider, receiver) == taken
        print(
            f"\nfaults: Redis down for {len(took)} writes (slowest answer {max(took):.2f} s);"
            f" {len(pending)} notifications waited, all sent once {recovered_in:.1f} s after"
            " Redis came back"
        )
