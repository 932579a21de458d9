"""Concurrent edits of one alert, through the API, each on its own connection.

An edit used to read the alert when the request came in and save it whole
later: two edits each raised the generation from the one they had read (one
re-arm lost), each audited a `before` the other had already changed, and an
edit finishing after a delete wrote the deleted alert back. To make the race
certain rather than likely, the requests are held together after they have
read the alert and before the service runs (`alerts.api._admins`, which the
edit endpoint calls between the two): what each then does is what it would
do had the scheduler paused it there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from accounts.models import AuditEvent
from accounts.services import api_key_create
from alerts import api as alerts_api
from alerts.models import Firing, OrganizationAlert
from tests.fixtures import ApiClient, run_at_once
from tests.helpers import absolute_alert, ingest

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


def _hold_edits_after_their_read(monkeypatch: pytest.MonkeyPatch, wait: Callable[[], None]) -> None:
    admins = alerts_api._admins

    def held(*args: Any, **kwargs: Any) -> Any:
        wait()
        return admins(*args, **kwargs)

    monkeypatch.setattr(alerts_api, "_admins", held)


@pytest.fixture
def clients(organization, owner):
    _, raw_key = api_key_create(organization=organization)
    return ApiClient(raw_key), ApiClient(raw_key)


@pytest.fixture
def alert(organization, owner, member):
    ingest(organization, 40, user=member, key="spent")
    return absolute_alert(organization, 100)


def _audits(alert: OrganizationAlert) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(action="alert.updated", target_id=str(alert.pk)).order_by("id")
    )


def test_two_edits_at_once_both_rearm_and_audit_in_turn(alert, clients, monkeypatch):
    both_read = threading.Barrier(2)
    _hold_edits_after_their_read(monkeypatch, lambda: both_read.wait(timeout=10))
    first, second = clients
    answers = run_at_once(
        lambda: first.patch(f"/api/v1/alerts/{alert.pk}", {"threshold": 20}),
        lambda: second.patch(f"/api/v1/alerts/{alert.pk}", {"threshold": 30}),
    )
    assert [answer.status_code for answer in answers] == [200, 200]
    stored = OrganizationAlert.objects.get(pk=alert.pk)
    assert stored.generation == alert.generation + 2  # each edit re-armed it
    audits = _audits(alert)
    assert len(audits) == 2
    # Each edit saw the alert as the other had left it: the trail is one chain.
    assert audits[0].before["threshold"] == "100"
    assert audits[1].before == audits[0].after
    assert audits[1].after["threshold"] == format(stored.threshold.normalize(), "f")
    # Usage (40) is past both thresholds: each arming fired once.
    assert Firing.objects.filter(alert=alert).count() == 2


def test_an_edit_racing_a_delete_answers_404_and_does_not_bring_the_alert_back(
    alert, clients, monkeypatch
):
    edit_read, deleted = threading.Event(), threading.Event()

    def after_the_delete() -> None:
        edit_read.set()
        assert deleted.wait(timeout=10)

    _hold_edits_after_their_read(monkeypatch, after_the_delete)
    editor, deleter = clients

    def delete() -> Any:
        assert edit_read.wait(timeout=10)
        try:
            return deleter.delete(f"/api/v1/alerts/{alert.pk}")
        finally:
            deleted.set()

    edited, removed = run_at_once(
        lambda: editor.patch(f"/api/v1/alerts/{alert.pk}", {"threshold": 20}), delete
    )
    assert removed.status_code == 204
    assert edited.status_code == 404, edited.content
    assert edited.json()["error"]["code"] == "alert_not_found"
    assert not OrganizationAlert.objects.filter(pk=alert.pk).exists()
    assert _audits(alert) == []
    assert AuditEvent.objects.filter(action="alert.deleted", target_id=str(alert.pk)).count() == 1
