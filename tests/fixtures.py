"""Shared fixtures: an organization with an owner (admin), a member, and an
outsider who is admin of another organization; an API client for each key.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from accounts.models import Membership, Organization, User
from accounts.services import api_key_create
from billing.selectors import current_period, members_over_budget
from tests.factories import AdminMembershipFactory, MembershipFactory, OrganizationFactory


@pytest.fixture(autouse=True)
def anymail_test_backend(settings: Any) -> None:
    """Unit tests send through Anymail's test backend (Django's runner would use locmem)."""
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    """Rate-limit counters start at zero in every test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def celery_in_process(request: pytest.FixtureRequest) -> Any:
    """Unit tests run tasks in-process; tests marked `worker` use a real one."""
    from config.celery import app

    if request.node.get_closest_marker("worker"):
        yield
        return
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def organization(db: None) -> Organization:
    return OrganizationFactory(slug="acme", name="Acme Inc")


@pytest.fixture
def owner(organization: Organization) -> Membership:
    return AdminMembershipFactory(organization=organization, user__email="owner@acme.test")


@pytest.fixture
def member(organization: Organization) -> Membership:
    return MembershipFactory(organization=organization, user__email="member@acme.test")


@pytest.fixture
def other_organization(db: None) -> Organization:
    return OrganizationFactory(slug="globex", name="Globex")


@pytest.fixture
def outsider(other_organization: Organization) -> Membership:
    return AdminMembershipFactory(organization=other_organization, user__email="admin@globex.test")


@pytest.fixture
def deliver(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """`deliver(write, *args, **kwargs)`: run a write, then the deliveries it
    queued on commit; the write's answer.
    """

    def run(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return write(*args, **kwargs)

    return run


def logged_in(who: Membership | User) -> Client:
    """A browser-less client logged in as a member (or a user)."""
    client = Client()
    client.force_login(who.user if isinstance(who, Membership) else who)
    return client


@pytest.fixture
def staff_client(db: None) -> Client:
    """A client logged in as a superuser, for the Django admin."""
    superuser = User.objects.create_superuser("staff@headroom.test", "staff-password")
    return logged_in(superuser)


def over_budget(organization: Organization) -> set[str]:
    """External ids of the members over their budget in the current period."""
    rows = members_over_budget(organization=organization, period=current_period(organization))
    return {row.membership.external_id for row in rows}


class ApiClient:
    """Django's test client with a Bearer key and JSON bodies."""

    def __init__(self, key: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, method: str, path: str, body: Any = None, **extra: Any) -> Any:
        kwargs: dict[str, Any] = {"headers": {**self.headers, **extra.pop("headers", {})}}
        if body is not None:
            kwargs["data"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
            kwargs["content_type"] = "application/json"
        return getattr(self.client, method)(path, **kwargs, **extra)

    def get(self, path: str, **extra: Any) -> Any:
        return self.request("get", path, **extra)

    def post(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.request("post", path, body, **extra)

    def put(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.request("put", path, body, **extra)

    def patch(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.request("patch", path, body, **extra)

    def delete(self, path: str, **extra: Any) -> Any:
        return self.request("delete", path, **extra)


@pytest.fixture
def api(organization: Organization) -> ApiClient:
    """An API client holding a key of `organization`."""
    _, raw_key = api_key_create(organization=organization)
    return ApiClient(raw_key)


@pytest.fixture
def outsider_api(other_organization: Organization) -> ApiClient:
    _, raw_key = api_key_create(organization=other_organization)
    return ApiClient(raw_key)


def run_at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread, all released together, each on its own
    database connection (closed when it ends); their answers, in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            answers[index] = call()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return answers


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """`work(0)` to `work(count - 1)`, each in its own thread, all released
    together (as run_at_once); their answers, in order."""
    return run_at_once(*(functools.partial(work, index) for index in range(count)))
