"""Ingest and the gate over HTTP, against gunicorn.

- Batch ingest: 1,000-event batches from a few concurrent clients, each on
  its own organization; a 202 means the events are persisted, the totals
  moved and the alerts evaluated (all in the request's transaction).
- Single ingest and consume: the most requests/s that 50 concurrent clients
  get (closed loop), and latency at a fixed offered rate (open loop).

Every request has its own idempotency key; users are spread over the
organizations' members so that the load is many tenants and many people.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from bench import loadgen
from bench.fixtures import Tenant

SOURCES = ("assistant", "agent", "workflow", "api")
# The view that does nothing (bench/floor_urls.py): the ceiling under consume.
FLOOR_PATH = "/api/v1/floor"


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


class Ingest:
    """Requests of `size` events; batch `index` from client `c` goes to the
    organization `c` (closed loop) or `index` (open loop) picks.
    """

    def __init__(self, url: str, tenants: Sequence[Tenant], size: int) -> None:
        self.host = _host(url)
        self.tenants = tenants
        self.size = size
        self.run = uuid.uuid4().hex[:10]
        self.accepted = 0

    def __call__(self, index: int, client: int) -> bytes:
        tenant = self.tenants[client % len(self.tenants)]
        users = tenant.users
        events = [
            {
                "idempotency_key": f"i-{self.run}-{index}-{j}",
                "user": users[(index * 31 + j) % len(users)],
                "credits": "0.5",
                "source": SOURCES[j % len(SOURCES)],
            }
            for j in range(self.size)
        ]
        body = json.dumps({"events": events}).encode()
        return loadgen.request_bytes(
            host=self.host, path="/api/v1/usage", api_key=tenant.api_key, body=body
        )

    def check(self, status: int, body: bytes) -> None:
        if status == 202:
            self.accepted += json.loads(body)["accepted"]


class Consume:
    def __init__(self, url: str, tenants: Sequence[Tenant], path: str = "/api/v1/consume") -> None:
        self.host = _host(url)
        self.tenants = tenants
        self.path = path
        self.run = uuid.uuid4().hex[:10]

    def __call__(self, index: int, client: int) -> bytes:
        tenant = self.tenants[index % len(self.tenants)]
        user = tenant.users[(index // len(self.tenants)) % len(tenant.users)]
        body = json.dumps(
            {
                "user": user,
                "credits": 1,
                "source": SOURCES[index % len(SOURCES)],
                "idempotency_key": f"c-{self.run}-{index}",
            }
        ).encode()
        return loadgen.request_bytes(
            host=self.host, path=self.path, api_key=tenant.api_key, body=body
        )


def warm_up(url: str, ingest_tenants: Sequence[Tenant], gate_tenants: Sequence[Tenant]) -> None:
    """Every worker imports, connects and fills its caches before a figure counts."""
    loadgen.closed_loop(url, Consume(url, gate_tenants), clients=8, seconds=3, max_requests=400)
    loadgen.closed_loop(url, Ingest(url, ingest_tenants, 1), clients=8, seconds=2, max_requests=200)
    loadgen.closed_loop(
        url, Ingest(url, ingest_tenants, 1000), clients=4, seconds=3, max_requests=8
    )


def batch_ingest(
    url: str, tenants: Sequence[Tenant], *, clients: int, seconds: float, max_batches: int
) -> tuple[loadgen.Outcome, int]:
    """Returns the run and the number of events accepted."""
    factory = Ingest(url, tenants, 1000)
    outcome = loadgen.closed_loop(
        url,
        factory,
        clients=clients,
        seconds=seconds,
        max_requests=max_batches,
        check=factory.check,
    )
    return outcome, factory.accepted


def single_ingest_closed(
    url: str, tenants: Sequence[Tenant], *, clients: int, seconds: float
) -> loadgen.Outcome:
    factory = Ingest(url, tenants, 1)
    return loadgen.closed_loop(
        url, _spread(factory), clients=clients, seconds=seconds, max_requests=int(seconds * 5000)
    )


def single_ingest_open(
    url: str, tenants: Sequence[Tenant], *, rate: float, seconds: float
) -> loadgen.Outcome:
    return loadgen.open_loop(url, Ingest(url, tenants, 1), rate=rate, seconds=seconds)


def consume_closed(
    url: str,
    tenants: Sequence[Tenant],
    *,
    clients: int,
    seconds: float,
    path: str = "/api/v1/consume",
) -> loadgen.Outcome:
    """A refusal (402) would count as lost: limits here are far above the load.
    With `path=FLOOR_PATH`, the same requests go to the view that does nothing.
    """
    return loadgen.closed_loop(
        url,
        Consume(url, tenants, path=path),
        clients=clients,
        seconds=seconds,
        max_requests=int(seconds * 5000),
    )


def consume_open(
    url: str, tenants: Sequence[Tenant], *, rate: float, seconds: float
) -> loadgen.Outcome:
    return loadgen.open_loop(url, Consume(url, tenants), rate=rate, seconds=seconds)


def _spread(factory: Ingest) -> loadgen.RequestFactory:
    """Single events: spread every client's requests over the organizations."""
    return lambda index, client: factory(index, index)
