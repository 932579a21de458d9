"""Limit-increase requests (SPEC §14): a member at their cap asks for more;
an admin approves (for good, or for this billing period only) or denies.
Through the API and the service; one pending request per member; the
admins the blocked notice names are emailed, then the member.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail

from accounts.models import Membership
from alerts.models import LimitRequest, Notification, WebhookEndpoint
from alerts.services.changes import custom_limit_set
from alerts.services.limit_requests import (
    limit_request_approve,
    limit_request_create,
    limit_requests_revert_due,
)
from billing.models import CustomLimit
from config.errors import Conflict
from tests.factories import AdminMembershipFactory
from tests.fixtures import logged_in, run_in_threads
from tests.helpers import consume, limits_on

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
REQUESTS = "/api/v1/limit-requests"


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def blocked(organization, owner, member) -> Membership:
    """`member` at the default limit of 100."""
    limits_on(organization, 100)
    consume(organization, member, 100)
    assert not consume(organization, member, 1).allowed
    return member


def custom_limit(member) -> Decimal | None:
    custom = CustomLimit.objects.filter(membership=member).first()
    return custom.limit if custom else None


class TestAsking:
    def test_the_admins_the_notice_names_are_emailed(
        self, api, organization, owner, blocked, deliver
    ):
        other_admin = AdminMembershipFactory(organization=organization)
        limits_on(organization, 100, admins=[other_admin])
        response = deliver(
            api.post, REQUESTS, {"user": blocked.external_id, "credits": "50", "reason": "Demo"}
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert (body["user"], body["credits"], body["reason"], body["status"]) == (
            blocked.external_id,
            "50",
            "Demo",
            "pending",
        )
        (email,) = mail.outbox
        assert email.to == [other_admin.user.email]
        assert f"{blocked.external_id} asks for 50 more credits" in email.subject
        assert "/settings/limits/#limit-requests" in email.body

    def test_one_pending_request_per_member(self, api, blocked):
        first = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"})
        second = api.post(REQUESTS, {"user": blocked.external_id, "credits": "10"})
        assert (first.status_code, second.status_code) == (201, 409)
        assert second.json()["error"]["code"] == "request_pending"
        assert LimitRequest.objects.count() == 1

    @pytest.mark.django_db(transaction=True)
    def test_one_pending_request_even_asked_at_once(self, organization, owner, blocked):
        def ask(index: int):
            try:
                return limit_request_create(
                    organization=organization, membership=blocked, credits=D(index + 1)
                )
            except Conflict:
                return None

        answers = run_in_threads(10, ask)
        assert sum(answer is not None for answer in answers) == 1
        assert LimitRequest.objects.count() == 1

    @pytest.mark.parametrize(
        "body",
        [
            {"user": "nobody@acme.test", "credits": "5"},
            {"credits": "5"},
            {"user": "member@acme.test", "credits": "0"},
            {"user": "member@acme.test", "credits": "-1"},
            {"user": "member@acme.test", "credits": "5", "reason": "x" * 1001},
            {"user": "member@acme.test", "credits": "5", "extra": 1},
        ],
    )
    def test_bad_input_is_refused_and_nothing_stored(self, api, blocked, body):
        response = api.post(REQUESTS, body)
        assert 400 <= response.status_code < 500 and response.status_code != 409
        assert not LimitRequest.objects.exists()


class TestAnswering:
    def test_approval_raises_the_limit_from_the_default_and_the_member_goes_on(
        self, api, organization, blocked, deliver
    ):
        asked = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"}).json()
        mail.outbox.clear()
        response = deliver(api.post, f"{REQUESTS}/{asked['id']}/approve", {})
        assert response.status_code == 200, response.content
        assert (response.json()["status"], response.json()["approved_credits"]) == (
            "approved",
            "50",
        )
        assert response.json()["resolved_by"] == "API"
        assert custom_limit(blocked) == 150
        assert consume(organization, blocked, 50).allowed
        (email,) = mail.outbox
        assert email.to == [blocked.user.email]
        assert "approved: 50 more credits" in email.subject

    def test_approval_adds_to_a_custom_limit_and_may_change_the_credits(
        self, organization, owner, blocked
    ):
        custom_limit_set(organization=organization, membership=blocked, limit=D(120))
        request = limit_request_create(organization=organization, membership=blocked, credits=D(50))
        limit_request_approve(request=request, by=owner, credits=D(30))
        assert custom_limit(blocked) == 150
        request.refresh_from_db()
        assert (request.resolved_by, request.approved_credits) == (owner, 30)

    def test_for_this_period_only_the_limit_returns_at_the_next(self, organization, owner, blocked):
        request = limit_request_create(organization=organization, membership=blocked, credits=D(50))
        limit_request_approve(request=request, by=owner, this_period_only=True)
        assert custom_limit(blocked) == 150
        assert limit_requests_revert_due() == 0  # not before the period ends
        with time_machine.travel(datetime(2026, 4, 1, 0, 0, 30, tzinfo=UTC), tick=False):
            assert limit_requests_revert_due() == 1
            assert limit_requests_revert_due() == 0  # once
        assert custom_limit(blocked) is None  # back to the default

    def test_a_later_change_by_an_admin_is_kept_at_the_period_end(
        self, organization, owner, blocked
    ):
        request = limit_request_create(organization=organization, membership=blocked, credits=D(50))
        limit_request_approve(request=request, by=owner, this_period_only=True)
        custom_limit_set(organization=organization, membership=blocked, limit=D(400))
        with time_machine.travel(NOW + timedelta(days=30), tick=False):
            limit_requests_revert_due()
        assert custom_limit(blocked) == 400

    def test_deny_with_a_reason_and_the_member_is_told(self, api, blocked, deliver):
        asked = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"}).json()
        mail.outbox.clear()
        response = deliver(api.post, f"{REQUESTS}/{asked['id']}/deny", {"reason": "Not now"})
        assert (response.json()["status"], response.json()["answer"]) == ("denied", "Not now")
        assert custom_limit(blocked) is None
        (email,) = mail.outbox
        assert email.to == [blocked.user.email]
        assert "Not now" in email.body

    def test_an_answered_request_is_closed(self, api, blocked):
        asked = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"}).json()
        api.post(f"{REQUESTS}/{asked['id']}/deny", {})
        for action in ("approve", "deny"):
            response = api.post(f"{REQUESTS}/{asked['id']}/{action}", {})
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "request_closed"
        assert custom_limit(blocked) is None
        # Answered, the member may ask again.
        assert api.post(REQUESTS, {"user": blocked.external_id, "credits": "5"}).status_code == 201

    def test_list_filters_by_status(self, api, organization, owner, blocked):
        asked = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"}).json()
        api.post(f"{REQUESTS}/{asked['id']}/deny", {})
        api.post(REQUESTS, {"user": blocked.external_id, "credits": "5"})
        assert [r["status"] for r in api.get(REQUESTS).json()["data"]] == ["pending", "denied"]
        assert [r["credits"] for r in api.get(f"{REQUESTS}?status=denied").json()["data"]] == ["50"]

    def test_events_reach_webhooks(self, api, organization, blocked):
        WebhookEndpoint.objects.create(
            organization=organization,
            url="https://hooks.example.com/x",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            events=["limit_request.created", "limit_request.approved", "limit_request.denied"],
        )
        asked = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"}).json()
        api.post(f"{REQUESTS}/{asked['id']}/approve", {"this_period_only": True})
        events = [n.payload for n in Notification.objects.filter(channel="webhook").order_by("id")]
        assert [e["type"] for e in events] == ["limit_request.created", "limit_request.approved"]
        assert events[1]["data"]["this_period_only"] is True
        assert events[1]["data"]["limit"] == "150"


def test_another_organization_never_sees_nor_answers_them(api, outsider_api, blocked):
    asked = api.post(REQUESTS, {"user": blocked.external_id, "credits": "50"}).json()
    assert outsider_api.get(REQUESTS).json()["data"] == []
    for action in ("approve", "deny"):
        assert outsider_api.post(f"{REQUESTS}/{asked['id']}/{action}", {}).status_code == 404
    response = outsider_api.post(REQUESTS, {"user": blocked.external_id, "credits": "5"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_user"
    assert LimitRequest.objects.get().status == "pending"


class TestPages:
    def test_a_member_asks_from_the_page_once_and_may_take_it_back(self, blocked):
        client = logged_in(blocked)
        response = client.post("/me/limit-request/", {"credits": "40", "reason": "Report"})
        assert response.status_code == 302
        assert LimitRequest.objects.get().credits == 40
        again = client.post("/me/limit-request/", {"credits": "10"})
        assert again.status_code == 422
        assert "already has a request waiting" in again.content.decode()
        assert (
            "You asked for <strong>40</strong> more credits"
            in client.get("/me/usage/").content.decode()
        )
        assert client.post("/me/limit-request/withdraw/").status_code == 302
        assert not LimitRequest.objects.exists()

    def test_bad_input_on_the_page_stores_nothing(self, blocked):
        response = logged_in(blocked).post("/me/limit-request/", {"credits": "-3"})
        assert response.status_code == 422
        assert not LimitRequest.objects.exists()

    def test_an_admin_approves_on_the_page(self, organization, owner, blocked):
        request = limit_request_create(organization=organization, membership=blocked, credits=D(5))
        client = logged_in(owner)
        assert "Limit Requests" in client.get("/settings/limits/").content.decode()
        response = client.post(
            f"/settings/limits/requests/{request.pk}/approve/",
            {"credits": "20", "this_period_only": "on"},
        )
        assert response.status_code == 302
        assert custom_limit(blocked) == 120
        request.refresh_from_db()
        assert (request.status, request.resolved_by, request.this_period_only) == (
            "approved",
            owner,
            True,
        )
        # Answered: gone from the section, and no longer answerable.
        gone = client.post(f"/settings/limits/requests/{request.pk}/deny/", {})
        assert gone.status_code == 404


def test_a_member_never_sees_another_members_request(organization, owner, blocked):
    from tests.factories import MembershipFactory

    other = MembershipFactory(organization=organization)
    consume(organization, other, 100)
    limit_request_create(organization=organization, membership=blocked, credits=D(40))
    html = logged_in(other).get("/me/usage/").content.decode()
    assert "You asked for" not in html
    assert "Request more credits" in html
