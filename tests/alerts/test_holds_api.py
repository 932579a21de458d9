"""The holds API (SPEC §13): its shapes, statuses and errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.models import CreditHold, MemberUsage, UsageEvent
from tests.helpers import assert_error, limits_on

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def post_hold(api, member, credits, *, key="h1", **fields):
    return api.post(
        "/api/v1/holds",
        {"user": member.external_id, "credits": credits, "idempotency_key": key, **fields},
    )


def test_a_hold_is_201_with_its_figures(api, organization, member):
    limits_on(organization, 100)
    response = post_hold(api, member, "12.5", expires_in=60)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        "id": body["id"],
        "allowed": True,
        "held": "12.5",
        "expires_at": "2026-03-10T12:01:00Z",
        "used": "12.5",
        "limit": "100",
        "remaining": "87.5",
    }


def test_a_refused_hold_is_402_with_the_consumes_refusal(api, organization, member):
    limits_on(organization, 10)
    response = post_hold(api, member, 11)
    assert response.status_code == 402
    assert response.json()["reason"] == "user_limit_reached"
    assert not CreditHold.objects.exists()


def test_a_repeated_hold_replays_and_another_body_is_409(api, member):
    first = post_hold(api, member, 5)
    again = post_hold(api, member, 5)
    assert (again.status_code, again.json()) == (201, first.json())
    assert_error(post_hold(api, member, 6), 409, "idempotency_key_reused", "idempotency_key")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 86_401}, "expires_in"),
        ({"source": "nowhere"}, "source"),
        ({"credits": 0}, "credits"),
        ({"user": "nobody"}, "user"),
    ],
)
def test_bad_input_is_422_and_holds_nothing(api, member, fields, field):
    body = {"user": member.external_id, "credits": 5, "idempotency_key": "bad", **fields}
    response = api.post("/api/v1/holds", body)
    assert response.status_code == 422, response.content
    assert field in response.content.decode()
    assert not CreditHold.objects.exists()


def test_settle_release_get_and_list(api, member, frozen_time):
    settled = post_hold(api, member, 10, key="a").json()["id"]
    released = post_hold(api, member, 10, key="b").json()["id"]
    expiring = post_hold(api, member, 10, key="c", expires_in=1).json()["id"]

    response = api.post(f"/api/v1/holds/{settled}/settle", {"credits": "7.5"})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": settled,
        "user": member.external_id,
        "credits": "10",
        "source": "assistant",
        "status": "settled",
        "expires_at": "2026-03-10T12:15:00Z",
        "settled_credits": "7.5",
        "created_at": "2026-03-10T12:00:00Z",
    }
    assert api.post(f"/api/v1/holds/{released}/release").json()["status"] == "released"
    frozen_time.move_to(NOW + timedelta(seconds=1))
    # Past its expiry it is expired, whether or not that was written yet.
    assert api.get(f"/api/v1/holds/{expiring}").json()["status"] == "expired"
    listed = {h["id"]: h["status"] for h in api.get("/api/v1/holds").json()["data"]}
    assert listed == {settled: "settled", released: "released", expiring: "expired"}
    assert [h["id"] for h in api.get("/api/v1/holds?status=expired").json()["data"]] == [expiring]
    assert api.get("/api/v1/holds?status=held").json()["data"] == []
    assert UsageEvent.objects.get().credits == Decimal("7.5")
    assert MemberUsage.objects.get().held == 10  # the expired one, until a write or the beat


def test_closed_holds_answer_409_hold_closed(api, member):
    hold_id = post_hold(api, member, 10).json()["id"]
    api.post(f"/api/v1/holds/{hold_id}/release")
    assert api.post(f"/api/v1/holds/{hold_id}/release").status_code == 200
    assert_error(api.post(f"/api/v1/holds/{hold_id}/settle", {"credits": 1}), 409, "hold_closed")


def test_settle_refuses_negative_credits_and_unknown_holds(api, member):
    hold_id = post_hold(api, member, 10).json()["id"]
    assert api.post(f"/api/v1/holds/{hold_id}/settle", {"credits": -1}).status_code == 422
    assert api.post(f"/api/v1/holds/{hold_id}/settle", {}).status_code == 422
    assert_error(api.post("/api/v1/holds/999999/settle", {"credits": 1}), 404, "hold_not_found")
    assert_error(api.get("/api/v1/holds/999999"), 404, "hold_not_found")
    assert CreditHold.objects.get().status == "held"


def test_another_organizations_holds_are_404(api, outsider_api, member):
    hold_id = post_hold(api, member, 10).json()["id"]
    assert outsider_api.get(f"/api/v1/holds/{hold_id}").status_code == 404
    assert outsider_api.post(f"/api/v1/holds/{hold_id}/release").status_code == 404
    assert outsider_api.get("/api/v1/holds").json()["data"] == []
    assert CreditHold.objects.get().status == "held"
