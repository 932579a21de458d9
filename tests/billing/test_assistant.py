"""/assistant/: work priced afterwards (SPEC §13). A run holds 5 credits,
streams its reply word by word, settles 0.1 credit a word, and shows what
was held and charged and the member's usage after the settle.
"""

from __future__ import annotations

from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.test import Client

from billing.assistant import ASSISTANT_HOLD, QUOTED_PROMPT_WORDS, reply_price, reply_words
from billing.forms import PROMPT_MAX_LENGTH
from billing.models import CreditHold, HoldStatus, MemberUsage, UsageEvent
from tests.fixtures import logged_in
from tests.helpers import assert_shows, counted, limits_on, response_html, spend

pytestmark = pytest.mark.django_db

D = Decimal
PROMPT = "Summarize my week"  # 22 words of the demo's own and these 3: 2.5 credits


def run(client: Client, prompt: str = PROMPT, **headers: str):
    return client.post("/assistant/", {"prompt": prompt}, headers=headers)


def test_the_reply_streams_word_by_word_under_the_hold(member):
    response = run(logged_in(member))

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/html; charset=utf-8"
    chunks = iter(response.streaming_content)
    head = next(chunks).decode()
    assert "You asked: “Summarize my week”" in head
    assert head.endswith('<p class="assistant-reply">')
    # While the reply streams, the 5 credits are held, nothing is charged yet.
    assert next(chunks) == b"This"
    assert next(chunks) == b" is"
    hold = CreditHold.objects.get()
    assert (hold.status, hold.credits, hold.source) == (HoldStatus.HELD, D(5), "assistant")
    assert MemberUsage.objects.get(membership=member).held == D(5)
    assert not UsageEvent.objects.exists()

    rest = b"".join(chunks).decode()

    assert len(reply_words(PROMPT)) == 25
    assert " word by word, as this reply arrives.</p>" in rest
    hold.refresh_from_db()
    assert (hold.status, hold.settled_credits) == (HoldStatus.SETTLED, D("2.5"))
    assert MemberUsage.objects.get(membership=member).held == 0


def test_the_run_is_charged_once_for_the_words_it_wrote(member):
    html = response_html(run(logged_in(member)))

    event = UsageEvent.objects.get()
    assert (event.membership, event.credits, event.source) == (member, D("2.5"), "assistant")
    assert counted(member) == D("2.5")
    assert_shows(
        html,
        "Held 5 credits, charged 2.5",
        "25 words at 0.1 credit a word; the 2.5 credits left of the hold were given back.",
    )


def test_the_price_follows_the_reply(member):
    prompt = "Draft a short note to the team about the new credit limits"  # 12 words

    html = response_html(run(logged_in(member), prompt))

    assert "Held 5 credits, charged 3.4" in html
    assert UsageEvent.objects.get().credits == D("3.4")


def test_usage_limit_and_remaining_are_read_after_the_settle(member, organization):
    limits_on(organization, 100)
    spend(member, 20)

    html = response_html(run(logged_in(member)))

    # 20 + 2.5 charged, not 20 + the 5 held.
    assert 'Your usage this period</dt>\n    <dd class="stat-value">22.5</dd>' in html
    assert 'Your limit</dt>\n    <dd class="stat-value">100</dd>' in html
    assert 'Remaining</dt>\n    <dd class="stat-value">77.5</dd>' in html


def test_a_run_needs_room_for_the_whole_hold_but_is_charged_only_what_it_used(member, organization):
    limits_on(organization, 100)
    spend(member, 95)  # exactly the 5 held left

    html = response_html(run(logged_in(member)))

    assert "Held 5 credits, charged 2.5" in html
    assert 'Remaining</dt>\n    <dd class="stat-value">2.5</dd>' in html
    assert counted(member) == D("97.5")


def test_no_reply_costs_more_than_it_held():
    longest = " ".join(["word"] * (PROMPT_MAX_LENGTH // 5))

    words = reply_words(longest)

    assert len(words) == 22 + QUOTED_PROMPT_WORDS + 1  # the quote ends with "…"
    assert words[14 + QUOTED_PROMPT_WORDS] == "…”"
    assert reply_price(words) <= ASSISTANT_HOLD


def test_the_prompt_is_escaped_in_the_streamed_reply(member):
    html = response_html(run(logged_in(member), "<script>alert(1)</script> now"))

    assert "<script>alert" not in html
    assert "“&lt;script&gt;alert(1)&lt;/script&gt; now”" in html


def test_htmx_gets_the_result_alone(member):
    response = run(logged_in(member), HX_Request="true")

    html = response_html(response)
    assert html.lstrip().startswith('<section class="card" aria-labelledby="assistant-reply-title"')
    assert "<html" not in html
    assert "Held 5 credits, charged 2.5" in html


def test_a_stream_cut_short_charges_nothing(member):
    response = run(logged_in(member))
    next(iter(response.streaming_content))

    # The client went away: the server closes the response (the test's own
    # database connection kept open, as Django's test client does).
    with mock.patch.object(connection, "close_if_unusable_or_obsolete"):
        response.close()

    assert CreditHold.objects.get().status == HoldStatus.RELEASED
    assert counted(member) == 0
    assert not UsageEvent.objects.exists()


def test_over_the_limit_the_run_is_refused_with_the_notice(organization, owner, member):
    limits_on(organization, 100, admins=[owner])
    spend(member, 97)  # 3 left: less than the 5 a run holds

    response = run(logged_in(member))

    assert response.status_code == 402
    html = response.content.decode()
    assert_shows(
        html,
        "You're too close to your credit limit for this action",
        "You have used 97 of your 100 credit limit",
        'up to <span class="figure">5</span> credits',
        "Request more credits",
        "mailto:owner@acme.test",
    )
    assert "Assistant reply" not in html
    assert not CreditHold.objects.exists()
    assert counted(member) == D(97)


def test_over_the_limit_htmx_gets_the_notice_fragment(organization, member):
    limits_on(organization, 100)
    spend(member, 100)

    response = run(logged_in(member), HX_Request="true")

    assert response.status_code == 402
    html = response.content.decode()
    assert html.strip().startswith('<section class="card notice" role="alert"')
    assert "Request more credits" in html


def test_an_invalid_prompt_holds_nothing(member):
    response = run(logged_in(member), "   ", HX_Request="true")

    assert response.status_code == 200
    assert "Write a prompt for the assistant." in response.content.decode()
    assert not CreditHold.objects.exists()
