"""`@credit_gate(..., hold=True)`: the gate holds the credits, the view
settles what the work cost, and the decorator closes whatever the view left
open: released when the view raises or its stream is cut short, settled for
the credits held when it ends without saying what it cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.test import Client
from django.urls import include, path
from django.views.decorators.http import require_http_methods

from accounts.models import Membership
from billing.models import CreditHold, HoldStatus, MemberUsage, OrganizationUsage, UsageEvent
from billing.web import GatedHttpRequest, credit_gate
from config.credits import format_credits
from config.dbretry import ConcurrentUpdate
from tests.fixtures import logged_in
from tests.helpers import counted, limits_on, spend

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

D = Decimal
HELD = D(5)


class Boom(Exception):
    """The view's work failed."""


# What the host view saw of the gate, for the tests to read.
seen: dict[str, object] = {}


def _stream(request: GatedHttpRequest, *, settle: Decimal | None) -> Iterator[str]:
    yield "one "
    yield "two "
    if settle is not None:
        assert request.credit_hold is not None
        request.credit_hold.settle(settle)
    yield "three"


@require_http_methods(["GET", "POST"])
@credit_gate(cost=HELD, source="agent", hold=True)
def held_view(request: GatedHttpRequest) -> HttpResponse:
    held = request.credit_hold
    seen.update(
        credit_hold=held,
        credit_decision=request.credit_decision,
        status_during_the_view=None if held is None else CreditHold.objects.get().status,
    )
    if held is None:
        return HttpResponse("nothing held")
    action = request.POST.get("do", "")
    if action == "raise":
        raise Boom
    if action == "settle":
        held.settle(D(2))
    if action == "release":
        held.release()
    if action.startswith("stream"):
        settle = D(3) if action == "stream-settling" else None
        return StreamingHttpResponse(_stream(request, settle=settle))
    return HttpResponse(f"held {format_credits(held.credits)}")


urlpatterns = [path("held/", held_view), path("", include("config.urls"))]


@pytest.fixture(autouse=True)
def forget_what_was_seen() -> Iterator[None]:
    seen.clear()
    yield
    seen.clear()


def run(client: Client, action: str = "", **headers: str):
    return client.post("/held/", {"do": action}, headers=headers)


def the_hold() -> CreditHold:
    return CreditHold.objects.get()


def close_as_the_server_does(response: HttpResponse) -> None:
    """The WSGI server closes the response when the client is gone. Its
    request_finished signal would close the test's own database connection
    (the test's transaction holds it): kept open, as Django's test client does.
    """
    with mock.patch.object(connection, "close_if_unusable_or_obsolete"):
        response.close()


def member_held(member: Membership) -> Decimal:
    return MemberUsage.objects.get(membership=member).held


def assert_nothing_held_or_recorded(member: Membership) -> None:
    assert member_held(member) == 0
    assert OrganizationUsage.objects.get().held == 0
    assert counted(member) == 0
    assert not UsageEvent.objects.exists()


def test_an_allowed_request_gives_the_view_the_open_hold(member):
    response = run(logged_in(member), "settle")

    assert response.status_code == 200
    held = seen["credit_hold"]
    assert held is not None
    assert held.credits == HELD  # type: ignore[attr-defined]
    assert seen["status_during_the_view"] == HoldStatus.HELD
    assert seen["credit_decision"] is None  # nothing is spent before the view in hold mode
    hold = the_hold()
    assert (hold.membership, hold.source, hold.credits) == (member, "agent", HELD)


def test_a_get_holds_nothing(member):
    response = logged_in(member).get("/held/")

    assert response.content == b"nothing held"
    assert seen["credit_hold"] is None
    assert not CreditHold.objects.exists()


def test_a_refused_hold_is_the_402_notice_and_holds_nothing(organization, owner, member):
    limits_on(organization, 10, admins=[owner])
    spend(member, 8)

    response = run(logged_in(member), "settle")

    assert response.status_code == 402
    html = response.content.decode()
    assert "You're too close to your credit limit for this action" in html
    assert "You have used 8 of your 10 credit limit" in html
    assert "This action needs" in html
    assert 'up to <span class="figure">5</span> credits' in html
    assert "Request more credits" in html
    assert seen == {}  # the view did not run
    assert not CreditHold.objects.exists()
    assert member_held(member) == 0
    assert counted(member) == 8


def test_a_refused_hold_for_htmx_is_the_notice_fragment(organization, member):
    limits_on(organization, 4)

    response = run(logged_in(member), "settle", HX_Request="true")

    assert response.status_code == 402
    assert response.content.decode().strip().startswith('<section class="card notice"')
    assert not CreditHold.objects.exists()


def test_the_view_settles_what_the_work_cost(member):
    run(logged_in(member), "settle")

    hold = the_hold()
    assert (hold.status, hold.settled_credits) == (HoldStatus.SETTLED, D(2))
    assert counted(member) == D(2)
    assert member_held(member) == 0


def test_a_view_that_raises_releases_the_hold_and_the_error_goes_on(member):
    with pytest.raises(Boom):
        run(logged_in(member), "raise")

    assert seen["status_during_the_view"] == HoldStatus.HELD
    assert the_hold().status == HoldStatus.RELEASED
    assert_nothing_held_or_recorded(member)


def test_a_plain_response_that_did_not_settle_is_settled_for_the_credits_held(member):
    response = run(logged_in(member))

    assert response.content == b"held 5"
    hold = the_hold()
    assert (hold.status, hold.settled_credits) == (HoldStatus.SETTLED, HELD)
    assert counted(member) == HELD
    assert UsageEvent.objects.get().credits == HELD
    assert member_held(member) == 0


def test_a_hold_the_view_released_stays_released(member):
    response = run(logged_in(member), "release")

    assert response.status_code == 200
    assert the_hold().status == HoldStatus.RELEASED
    assert_nothing_held_or_recorded(member)


def test_a_stream_read_to_its_end_is_settled_with_the_views_figure(member):
    response = run(logged_in(member), "stream-settling")
    assert the_hold().status == HoldStatus.HELD  # the stream has not run yet
    assert member_held(member) == HELD

    assert b"".join(response.streaming_content) == b"one two three"

    hold = the_hold()
    assert (hold.status, hold.settled_credits) == (HoldStatus.SETTLED, D(3))
    assert counted(member) == D(3)
    assert UsageEvent.objects.get().credits == D(3)
    assert member_held(member) == 0


def test_a_stream_read_to_its_end_without_a_figure_is_settled_for_the_credits_held(member):
    response = run(logged_in(member), "stream")

    assert b"".join(response.streaming_content) == b"one two three"

    hold = the_hold()
    assert (hold.status, hold.settled_credits) == (HoldStatus.SETTLED, HELD)
    assert counted(member) == HELD


def test_a_stream_cut_short_releases_the_hold(member):
    response = run(logged_in(member), "stream-settling")

    assert next(iter(response.streaming_content)) == b"one "
    close_as_the_server_does(response)  # the client went away after the first chunk

    assert the_hold().status == HoldStatus.RELEASED
    assert_nothing_held_or_recorded(member)


def test_a_stream_closed_before_its_first_chunk_releases_the_hold(member):
    response = run(logged_in(member), "stream-settling")

    close_as_the_server_does(response)

    assert the_hold().status == HoldStatus.RELEASED
    assert_nothing_held_or_recorded(member)


def test_a_hold_that_kept_meeting_concurrent_writes_answers_409_and_runs_nothing(
    member, monkeypatch
):
    def always_concurrent(*args, **kwargs):
        raise ConcurrentUpdate("Concurrent updates: nothing was recorded.", code="x")

    monkeypatch.setattr("billing.web.hold_credits", always_concurrent)
    response = run(logged_in(member), "settle")

    assert response.status_code == 409
    assert seen == {}
    assert not CreditHold.objects.exists()
