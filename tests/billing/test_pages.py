"""The browser side of the credit gate: `@credit_gate`, the blocked-action
notice, /assistant/ and /me/usage/.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.http import HttpResponse
from django.template import Context, Template
from django.test import Client
from django.urls import include, path
from django.views.decorators.http import require_http_methods

from accounts.models import Membership, Organization
from alerts.services.changes import custom_limit_set, limit_policy_update
from billing.models import MemberUsage, UsageEvent
from billing.selectors import admins_to_ask
from billing.web import GatedHttpRequest, credit_gate
from config.credits import format_credits
from config.dbretry import ConcurrentUpdate
from tests.factories import AdminMembershipFactory, MembershipFactory
from tests.fixtures import logged_in
from tests.helpers import (
    assert_shows,
    clock_held_at,
    counted,
    limits_on,
    page_html,
    response_html,
    spend,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

D = Decimal
NOW = datetime(2025, 6, 15, 12, 30, tzinfo=UTC)


# A host view of the kind the decorator is for: it charges by input, and
# charges nothing for a request that names no amount.


def _requested_credits(request: GatedHttpRequest) -> Decimal | None:
    raw = request.POST.get("credits")
    return D(raw) if raw else None


@require_http_methods(["GET", "POST"])
@credit_gate(cost=_requested_credits, source="agent")
def host_view(request: GatedHttpRequest) -> HttpResponse:
    decision = request.credit_decision
    if decision is None:
        return HttpResponse("ran for free")
    return HttpResponse(f"ran; used {format_credits(decision.used)}")


urlpatterns = [path("host/", host_view), path("", include("config.urls"))]


frozen_time = clock_held_at(NOW)


def run_assistant(client: Client, prompt: str = "Summarize my week", **headers: str):
    return client.post("/assistant/", {"prompt": prompt}, headers=headers)


# The decorator: allowed


def test_an_allowed_run_executes_the_view_and_records_the_usage(member):
    response = run_assistant(logged_in(member))

    assert response.status_code == 200
    html = response_html(response)
    assert "Assistant reply" in html
    assert "You asked: “Summarize my week”" in html
    # 25 words at 0.1 credit a word, settled from the hold of 5.
    assert "Held 5 credits, charged 2.5" in html
    assert counted(member) == D("2.5")
    event = UsageEvent.objects.get()
    assert (event.membership, event.credits, event.source) == (member, D("2.5"), "assistant")


def test_an_allowed_run_shows_usage_limit_and_remaining_after_it(member, organization):
    limits_on(organization, 100)
    spend(member, 20)

    html = response_html(run_assistant(logged_in(member)))

    assert 'Your usage this period</dt>\n    <dd class="stat-value">22.5<' in html
    assert '<dd class="stat-value">100</dd>' in html
    assert '<dd class="stat-value">77.5</dd>' in html


def test_without_a_limit_the_result_says_no_limit(member):
    html = response_html(run_assistant(logged_in(member)))

    assert '<dd class="stat-value">No limit</dd>' in html


def test_htmx_run_returns_only_the_result(member):
    response = run_assistant(logged_in(member), HX_Request="true")

    assert response.status_code == 200
    html = response_html(response)
    assert "Assistant reply" in html
    assert "Held 5 credits, charged 2.5" in html
    assert "<html" not in html
    assert "Run assistant" not in html


def test_the_page_itself_is_free(member):
    html = page_html(member, "/assistant/")
    assert_shows(
        html,
        '<label for="id_prompt">Prompt</label>',
        "Run assistant",
        "Up to 5 credits per run",
        'hx-post="/assistant/"',
    )
    assert not UsageEvent.objects.exists()


def test_an_empty_prompt_is_not_charged(member):
    client = logged_in(member)

    page = run_assistant(client, prompt="   ")
    fragment = run_assistant(client, prompt="", HX_Request="true")

    assert page.status_code == fragment.status_code == 200
    assert "Write a prompt for the assistant." in page.content.decode()
    assert "Write a prompt for the assistant." in fragment.content.decode()
    assert "Assistant reply" not in page.content.decode()
    assert not UsageEvent.objects.exists()


def test_a_cost_callable_charges_by_input(member):
    client = logged_in(member)

    charged = client.post("/host/", {"credits": "2.5"})
    free = client.post("/host/", {})
    get = client.get("/host/")

    assert charged.content == b"ran; used 2.5"
    assert free.content == get.content == b"ran for free"
    assert UsageEvent.objects.get().source == "agent"
    assert counted(member) == D("2.5")


def test_a_gate_that_kept_meeting_concurrent_writes_answers_409_and_runs_nothing(
    member, monkeypatch
):
    def always_concurrent(**kwargs):
        raise ConcurrentUpdate("Concurrent updates: nothing was recorded.", code="x")

    monkeypatch.setattr("billing.web.usage_consume", always_concurrent)
    response = logged_in(member).post("/host/", {"credits": "2.5"})

    assert response.status_code == 409
    assert response.content == b"Concurrent updates: nothing was recorded."


def test_the_gate_refuses_bad_settings_when_a_view_is_decorated():
    with pytest.raises(ValueError, match="Unknown source"):
        credit_gate(cost=D(1), source="chat")
    with pytest.raises(ValueError, match="greater than 0"):
        credit_gate(cost=D(0))


# The decorator: refused


@pytest.fixture
def member_at_limit(organization: Organization, owner: Membership, member: Membership):
    limits_on(organization, 500, admins=[owner])
    spend(member, 500)
    return member


def test_refused_for_the_limit_is_a_402_page_with_the_four_facts(member_at_limit, owner):
    response = run_assistant(logged_in(member_at_limit))

    assert response.status_code == 402
    html = response.content.decode()
    assert "<title>Action blocked · Headroom</title>" in html
    assert "Your account" in html  # the whole layout, with the sidebar of a member
    # Why
    assert 'role="alert"' in html
    assert "You've reached your credit limit" in html
    assert "You have used 500 of your 500 credit limit for this billing period." in html
    # Usage and limit
    assert "Your usage this period" in html
    assert '<strong class="figure">500</strong> of 500 credits' in html
    assert "This action needs" in html
    # When it resets
    assert '<time datetime="2025-07-01T00:00:00+00:00">July 1, 2025, 00:00 UTC</time>' in html
    # Whom to ask
    assert "Ask an admin" in html
    assert '<a href="mailto:owner@acme.test">owner@acme.test</a>' in html
    assert owner.user.name in html
    # The view did not run, nothing was spent
    assert "Assistant reply" not in html
    assert counted(member_at_limit) == D(500)
    assert UsageEvent.objects.count() == 1


def test_refused_for_the_organization_shows_its_usage_and_allowance(organization, owner, member):
    organization.credit_allowance = D(1000)
    organization.save()
    spend(owner, 998)

    response = run_assistant(logged_in(member))

    assert response.status_code == 402
    html = response.content.decode()
    assert_shows(
        html,
        "Your organization is out of credits",
        "Your organization has used 998 of its 1,000 credits",
        "Organization usage this period",
        '<strong class="figure">998</strong> of 1,000 credits',
        "(the organization's allowance)",
        "Credits reset",
        "July 1, 2025, 00:00 UTC",
    )
    assert counted(member) == 0


def test_the_policy_admins_are_the_ones_to_ask(organization, owner, member):
    other_admin = AdminMembershipFactory(organization=organization, user__email="cfo@acme.test")
    limits_on(organization, 1, admins=[other_admin])

    html = run_assistant(logged_in(member)).content.decode()

    assert "mailto:cfo@acme.test" in html
    assert "mailto:owner@acme.test" not in html


def test_all_admins_are_asked_when_the_policy_names_none(organization, owner, member):
    AdminMembershipFactory(organization=organization, user__email="cfo@acme.test")
    MembershipFactory(organization=organization, user__email="colleague@acme.test")
    AdminMembershipFactory(user__email="admin@elsewhere.test")
    limits_on(organization, 1)

    html = run_assistant(logged_in(member)).content.decode()

    assert "mailto:cfo@acme.test" in html
    assert "mailto:owner@acme.test" in html
    assert "colleague@acme.test" not in html
    assert "admin@elsewhere.test" not in html


def test_all_admins_are_asked_when_there_is_no_policy(organization, owner, member):
    organization.credit_allowance = D(1)
    organization.save()

    html = run_assistant(logged_in(member)).content.decode()

    assert "mailto:owner@acme.test" in html


def test_a_named_admin_who_is_no_longer_admin_is_not_asked(organization, owner, member):
    demoted = AdminMembershipFactory(organization=organization, user__email="former@acme.test")
    limit_policy_update(organization=organization, enabled=True, admins=[demoted])
    demoted.role = "member"
    demoted.save()

    assert admins_to_ask(organization=organization) == [owner]


def test_htmx_refusal_is_the_notice_fragment_without_the_layout(member_at_limit):
    response = run_assistant(logged_in(member_at_limit), HX_Request="true")

    assert response.status_code == 402
    html = response.content.decode().strip()
    assert html.startswith('<section class="card notice" role="alert"')
    assert "<html" not in html
    assert "sidebar-title" not in html
    assert "Action blocked" not in html
    assert "You've reached your credit limit" in html
    assert "mailto:owner@acme.test" in html


def test_a_boosted_request_gets_the_whole_page(member_at_limit):
    response = run_assistant(logged_in(member_at_limit), HX_Request="true", HX_Boosted="true")

    assert response.status_code == 402
    assert "<html" in response.content.decode()


def test_without_javascript_the_blocked_page_links_back(member_at_limit):
    html = run_assistant(logged_in(member_at_limit)).content.decode()

    assert '<a class="btn btn-secondary" href="/assistant/">Go back</a>' in html
    assert '<a href="/me/usage/">See my usage</a>' in html


def test_anonymous_visitors_are_sent_to_log_in_and_nothing_is_spent(db):
    response = Client().post("/assistant/", {"prompt": "hi"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/assistant/"
    assert not UsageEvent.objects.exists()


def test_anonymous_htmx_visitors_are_redirected_whole(db):
    response = Client().post("/assistant/", {"prompt": "hi"}, headers={"HX-Request": "true"})

    assert response.headers["HX-Redirect"] == "/accounts/login/?next=/assistant/"


def test_the_gated_host_view_alone_also_sends_anonymous_visitors_to_log_in(db):
    response = Client().post("/host/", {"credits": "1"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/host/"


def test_an_allowed_run_makes_a_bounded_number_of_queries(
    member, organization, django_assert_max_num_queries
):
    limits_on(organization, 100)
    client = logged_in(member)
    client.get("/assistant/")  # the first visit stores the organization in the session

    # session, user, memberships; the hold (billing/web.py, hold=True): key
    # check, savepoint, limit rules, due holds, member and organization
    # totals, the hold, its answer, release, the hold read back with its
    # member and organization; the settle once the reply has streamed: the
    # hold, savepoint, event, hold closed, limit rules, member, organization,
    # day and source totals, the alert configuration, release, the hold read
    # back; the usage after it: the member's total and limit.
    with django_assert_max_num_queries(28):
        response = run_assistant(client, HX_Request="true")
        html = response_html(response)

    assert response.status_code == 200
    assert "Held 5 credits, charged 2.5" in html


def test_a_refusal_makes_a_bounded_number_of_queries(
    member_at_limit, organization, django_assert_max_num_queries
):
    for index in range(5):
        AdminMembershipFactory(organization=organization, user__email=f"admin{index}@acme.test")
    client = logged_in(member_at_limit)
    client.get("/assistant/")

    # session, user, memberships; the gate up to the refused member total,
    # then the usage that explains the refusal, the answer; the admins to ask,
    # one query however many.
    with django_assert_max_num_queries(14):
        response = run_assistant(client)

    assert response.status_code == 402


# /me/usage/


def test_my_usage_shows_counted_usage_against_the_limit(organization, member):
    limits_on(organization, 500, excluded_sources=["workflow"])
    spend(member, 420)
    spend(member, 80, source="workflow")

    html = page_html(member, "/me/usage/")
    assert_shows(
        html,
        "<h1>My usage</h1>",
        '<strong class="figure">420</strong> of 500 credits used',
        '<span class="figure">84%</span>',
        'aria-valuenow="84"',
        "progress-warning",
        "Nearly used",
    )
    # remaining, total incl. excluded sources, which sources are excluded
    assert '<span class="figure">80</span> credits' in html
    assert '<span class="figure">500</span> credits' in html  # total, all sources
    assert '<span class="badge">Workflow</span>' in html
    assert '<time datetime="2025-07-01T00:00:00+00:00">July 1, 2025, 00:00 UTC</time>' in html
    assert "You've reached your credit limit" not in html


def test_my_usage_without_a_limit_says_no_limit(organization, member):
    spend(member, 42)

    html = logged_in(member).get("/me/usage/").content.decode()

    assert "<dd>No limit</dd>" in html
    assert 'role="progressbar" aria-label="Your credit limit used"' not in html
    assert '<strong class="figure">42</strong> credits' in html


def test_my_usage_with_an_unlimited_custom_limit(organization, member):
    limits_on(organization, 10)
    custom_limit_set(organization=organization, membership=member, limit=None)
    spend(member, 50)

    html = logged_in(member).get("/me/usage/").content.decode()

    assert "<dd>No limit</dd>" in html
    assert "You've reached your credit limit" not in html


def test_my_usage_over_budget_shows_whom_to_ask(member_at_limit):
    html = logged_in(member_at_limit).get("/me/usage/").content.decode()

    assert_shows(
        html,
        "Limit reached",
        "progress-danger",
        '<span class="figure">100%</span>',
        "You've reached your credit limit",
        "Ask an admin",
        "mailto:owner@acme.test",
    )
    assert "This action needs" not in html


def test_my_usage_shows_an_exhausted_organization(organization, owner, member):
    organization.credit_allowance = D(100)
    organization.save()
    spend(owner, 100)

    html = logged_in(member).get("/me/usage/").content.decode()

    assert_shows(
        html,
        "Acme Inc allowance",
        '<span class="badge badge-danger">Exhausted</span>',
        "credit-consuming actions are blocked until it resets",
        "Your organization is out of credits",
        "mailto:owner@acme.test",
    )


def test_my_usage_with_an_organization_with_credits_left(organization, member):
    organization.credit_allowance = D(1000)
    organization.save()
    spend(member, 250)

    html = logged_in(member).get("/me/usage/").content.decode()

    assert '<strong class="figure">250</strong> of 1,000 credits used by the organization' in html
    assert "Credits available" in html
    assert 'role="alert"' not in html


def test_my_usage_is_for_admins_too(owner):
    assert logged_in(owner).get("/me/usage/").status_code == 200


def test_my_usage_is_only_the_members_own(organization, member):
    colleague = MembershipFactory(organization=organization)
    spend(colleague, 321)

    html = logged_in(member).get("/me/usage/").content.decode()

    assert "321" not in html


def test_my_usage_query_count_is_bounded(member_at_limit, django_assert_max_num_queries):
    client = logged_in(member_at_limit)
    client.get("/me/usage/")

    # session, user, memberships, policy, custom limit, member total,
    # organization total, admins to ask
    with django_assert_max_num_queries(8):
        response = client.get("/me/usage/")

    assert response.status_code == 200


def test_anonymous_visitors_of_my_usage_are_sent_to_log_in(db):
    response = Client().get("/me/usage/")

    assert response["Location"] == "/accounts/login/?next=/me/usage/"


# Layout and landing


def test_members_land_on_their_usage(member):
    response = logged_in(member).get("/")

    assert response["Location"] == "/me/usage/"


def test_the_sidebar_links_to_my_usage_for_everyone(member, owner):
    for membership in (member, owner):
        html = logged_in(membership).get("/me/usage/").content.decode()
        assert '<a href="/me/usage/" aria-current="page">My usage</a>' in html
        assert '<a href="/assistant/">Assistant</a>' in html
        # The admin pages are in the sidebar of admins only.
        assert ('<a href="/usage/">Monitor usage</a>' in html) == membership.is_admin


# The credits filter


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "—"), (D("1234.500000"), "1,234.5"), (D("0.1"), "0.1"), (5, "5"), (D("1E+3"), "1,000")],
)
def test_credits_filter(value, shown):
    template = Template("{% load credits %}{{ value|credits }}")

    assert template.render(Context({"value": value})) == shown


def test_member_usage_rows_are_untouched_by_a_page_view(member):
    logged_in(member).get("/me/usage/")

    assert not MemberUsage.objects.exists()
