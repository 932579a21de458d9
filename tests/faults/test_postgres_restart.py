"""PostgreSQL restarted under load: no usage lost, none counted twice.

Four clients spend and report usage, each request with a key of its own, and
retry what failed (a connection error, a 5xx) with the same key and body, as
a host application would, until it gets an answer. Meanwhile the private
PostgreSQL is stopped and started twice: `fast` (clients cut off, open
transactions rolled back) and `immediate` (the server processes killed,
crash recovery on start), down one second each time. At the end the ledger
and every total equal what the clients were told was recorded, each key
once; each member's limit was reached exactly (a lost or doubled consume
would move the 20th allowed one); the alert crossed meanwhile fired once and
mailed each admin once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest

from tests.faults.services import (
    Api,
    Database,
    PrivatePostgres,
    Provider,
    Stack,
    deliveries,
    ledger_figures,
    seed,
    wait_until,
)

pytestmark = pytest.mark.faults

CLIENTS = 4
CONSUMES = 30  # per client, 1 credit each, for its own member
LIMIT = 20  # per member: the first 20 consumes are allowed, the last 10 refused
INGESTS = 15  # per client, 3 events of 0.5 credit each, for an admin
PAUSE = 0.12  # between a client's requests: the load spans both restarts
ALERT_AT = 100  # crossed about halfway (the run records 4 x (20 + 22.5) = 170)
DEADLINE = 90.0  # seconds for the whole load, restarts and retries included


@dataclass
class Client:
    index: int
    api: Api
    consumes: list[bool] = field(default_factory=list)  # allowed?
    ingested: list[tuple[str, Decimal]] = field(default_factory=list)
    replayed_ingests: int = 0  # retried after the first try had been recorded
    failures: list[float] = field(default_factory=list)
    error: BaseException | None = None

    def send(self, path: str, body: dict[str, Any], answers: tuple[int, ...]) -> Any:
        """Until an answer: failures are retried with the same key and body."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                response = self.api.post(path, body, timeout=10)
            except httpx.HTTPError:
                self.failures.append(time.monotonic())
            else:
                if response.status_code in answers:
                    return response
                assert response.status_code >= 500 or response.status_code == 429, response.text
                self.failures.append(time.monotonic())
            time.sleep(0.1)
        raise AssertionError(f"{path} got no answer in {DEADLINE:g} s")

    def run(self) -> None:
        try:
            for n in range(max(CONSUMES, INGESTS)):
                if n < CONSUMES:
                    body = {"user": f"member-{self.index}", "credits": 1}
                    body["idempotency_key"] = f"consume-{self.index}-{n}"
                    self.consumes.append(self.send("/consume", body, (200, 402)).status_code == 200)
                if n < INGESTS:
                    events = [
                        {
                            "idempotency_key": f"ingest-{self.index}-{n}-{e}",
                            "credits": "0.5",
                            "user": f"admin-{self.index % 2}",
                        }
                        for e in range(3)
                    ]
                    answer = self.send("/usage", {"events": events}, (202,)).json()
                    assert answer["accepted"] + answer["duplicates"] == 3, answer
                    self.replayed_ingests += answer["duplicates"] > 0
                    self.ingested += [
                        (event["idempotency_key"], Decimal("0.5")) for event in events
                    ]
                time.sleep(PAUSE)
        except BaseException as error:  # reported by the test
            self.error = error


def test_postgres_restarted_under_load(
    stack: Stack, postgres: PrivatePostgres, provider: Provider, database: Database
) -> None:
    stack.start_web(workers=3)
    stack.start_worker()
    stack.start_beat()
    tenant = seed(
        stack.env,
        {
            "slug": "restart",
            "admins": 2,
            "members": CLIENTS,
            "alerts": [{"threshold": ALERT_AT}],
            "default_limit": LIMIT,
        },
    )
    stack.ready()
    clients = [Client(i, Api(stack.url, tenant["api_key"])) for i in range(CLIENTS)]
    threads = [threading.Thread(target=client.run, daemon=True) for client in clients]
    for thread in threads:
        thread.start()

    # Each restart once the clients are that far into their work: under load.
    def reached(share: float) -> bool:
        done = sum(len(client.consumes) for client in clients)
        return done >= share * CLIENTS * CONSUMES or any(client.error for client in clients)

    restarts = []
    for mode, share in (("fast", 0.2), ("immediate", 0.55)):
        wait_until(partial(reached, share), seconds=DEADLINE, what=f"{share:.0%} of the load")
        down_at = time.monotonic()
        postgres.restart(mode=mode, down_for=1.0)
        restarts.append((down_at, time.monotonic()))
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert not any(thread.is_alive() for thread in threads), "the clients did not finish"
    assert [client.error for client in clients] == [None] * CLIENTS

    # The faults were felt: every restart failed requests, which were retried.
    for down_at, up_at in restarts:
        assert any(down_at <= t <= up_at + 1 for c in clients for t in c.failures), restarts

    # Each member: exactly 20 allowed, then refused; nothing lost, nothing doubled.
    for client in clients:
        assert client.consumes == [True] * LIMIT + [False] * (CONSUMES - LIMIT)
    counted = dict(
        database.rows(
            "SELECT m.external_id, u.counted FROM billing_memberusage u"
            " JOIN accounts_membership m ON m.id = u.membership_id"
            " WHERE m.external_id LIKE 'member-%%'"
        )
    )
    assert counted == {f"member-{i}": LIMIT for i in range(CLIENTS)}

    expected_keys = Counter(
        [key for client in clients for key, _ in client.ingested]
        + [f"consume-{c.index}-{n}" for c in clients for n, ok in enumerate(c.consumes) if ok]
    )
    expected = sum(
        (credits for client in clients for _, credits in client.ingested), start=Decimal(0)
    ) + sum(client.consumes.count(True) for client in clients)
    figures = ledger_figures(database, tenant["organization_id"])
    assert figures["keys"] == expected_keys  # every key recorded, and once
    assert figures["events"] == expected == Decimal(170)
    assert figures["organization"] == figures["members"] == expected
    assert figures["sources"] == figures["days"] == expected

    print(
        f"\nfaults: 2 PostgreSQL restarts; {sum(len(c.failures) for c in clients)} failed"
        f" requests retried; {sum(c.replayed_ingests for c in clients)} ingests replayed after"
        f" being recorded; {sum(expected_keys.values())} keys, {expected} credits recorded"
    )
    # The alert crossed during the run fired once; each admin was mailed once.
    assert (
        database.value("SELECT count(*) FROM alerts_firing WHERE kind = 'organization_alert'") == 1
    )
    wait_until(lambda: database.unsent() == 0, seconds=30, what="every notification sent")
    taken = deliveries(provider)
    assert taken == Counter({n["uid"].hex: 1 for n in database.notifications()}), taken
    print(f"faults: {len(taken)} notifications, each delivered once")
