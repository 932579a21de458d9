"""The Limits & Alerts page of a 10,000-member organization, rendered
in-process for a logged-in admin (Django's test Client, `force_login`): server
time per request and the number of queries.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.fixtures import Tenant
from bench.loadgen import percentile

PATH = "/settings/limits/"


@dataclass
class PageResult:
    times: list[float]
    queries: int
    sql: list[str]
    size: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.times) * 1000

    @property
    def p95_ms(self) -> float:
        return percentile(self.times, 95) * 1000


def measure(tenant: Tenant, *, requests: int = 30, seconds: float = 30) -> PageResult:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings

    from accounts.models import Membership

    admin = Membership.objects.select_related("user").get(
        organization_id=tenant.organization_id, external_id=tenant.users[0]
    )
    client = Client()
    client.force_login(admin.user)
    # Production serves static files through the manifest that collectstatic
    # writes; nothing is collected here, so names resolve through the finders.
    storages: dict[str, Any] = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages):
        for _ in range(3):
            response = client.get(PATH)
            assert response.status_code == 200, response.status_code
        with CaptureQueriesContext(connection) as captured:
            response = client.get(PATH)
        # Read now: the next request clears the connection's query log.
        sql = [query["sql"] for query in captured.captured_queries]
        times: list[float] = []
        deadline = time.monotonic() + seconds
        while len(times) < requests and time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.get(PATH)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
    return PageResult(
        times=times,
        queries=len(sql),
        sql=sql,
        size=len(response.content),
    )
