"""The demo assistant at /assistant/: work priced afterwards (SPEC §13).

A run holds `ASSISTANT_HOLD` credits through `@credit_gate(..., hold=True)`,
streams its reply word by word, then settles for what the reply cost,
`ASSISTANT_CREDITS_PER_WORD` a word (never more than it held: the reply
quotes at most `QUOTED_PROMPT_WORDS` of the prompt). The reply card's last
part, rendered after the settle, says what was held and charged and the
member's usage, limit and remaining as they then stand.

The page (or, for htmx, its `#result` partial) is rendered at once with
markers where the reply and the charge go, and streamed around them: without
JavaScript the browser shows the reply as it comes; htmx swaps it whole once
it has arrived. A stream cut short releases the hold and charges nothing
(billing/web.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.http import HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.html import escape
from django.views.decorators.http import require_http_methods

from accounts.models import Membership
from accounts.web import OrganizationHttpRequest
from billing.forms import AssistantForm
from billing.models import Source
from billing.selectors import current_period, limit_rules_get, member_usage_get
from billing.web import GatedHttpRequest, credit_gate, wants_fragment

ASSISTANT_HOLD = Decimal(5)
ASSISTANT_CREDITS_PER_WORD = Decimal("0.1")
QUOTED_PROMPT_WORDS = 20
# A pause between words, so that the reply visibly streams; short enough for tests.
WORD_PAUSE_SECONDS = 0.004
TEMPLATE = "billing/assistant.html"
REPLY_BEFORE = "This is the demo assistant, so no model ran. A real one would answer"
REPLY_AFTER = "here, word by word, as this reply arrives."


def reply_words(prompt: str) -> list[str]:
    """The demo's reply to `prompt`, word by word: no model runs, so it says
    so, quoting the prompt's first words.
    """
    quoted = prompt.split()
    if len(quoted) > QUOTED_PROMPT_WORDS:
        quoted = [*quoted[:QUOTED_PROMPT_WORDS], "…"]
    quoted[0] = f"“{quoted[0]}"
    quoted[-1] = f"{quoted[-1]}”"
    return [*REPLY_BEFORE.split(), *quoted, *REPLY_AFTER.split()]


def reply_price(words: list[str]) -> Decimal:
    """What a reply costs: a fixed price per word."""
    return ASSISTANT_CREDITS_PER_WORD * len(words)


def _hold_for(request: OrganizationHttpRequest) -> Decimal | None:
    """A run holds the most a reply can cost; an invalid prompt is no run and holds nothing."""
    return ASSISTANT_HOLD if AssistantForm(request.POST).is_valid() else None


@require_http_methods(["GET", "POST"])
@credit_gate(cost=_hold_for, source=Source.ASSISTANT, hold=True)
def assistant(request: GatedHttpRequest) -> HttpResponseBase:
    """The demo of work priced afterwards: each run holds, streams, then settles."""
    form = AssistantForm(request.POST if request.method == "POST" else None)
    fragment = request.method == "POST" and wants_fragment(request)
    template = f"{TEMPLATE}#result" if fragment else TEMPLATE
    context: dict[str, Any] = {
        "form": form,
        "hold": ASSISTANT_HOLD,
        "per_word": ASSISTANT_CREDITS_PER_WORD,
    }
    if request.credit_hold is None or not form.is_valid():
        return render(request, template, context)
    prompt = form.cleaned_data["prompt"]
    marker = f"assistant-stream-{secrets.token_hex(8)}"
    page = render_to_string(
        template, context | {"prompt": prompt, "stream_marker": marker}, request=request
    )
    head, between, foot = page.split(marker)
    return StreamingHttpResponse(
        _reply_stream(request, prompt=prompt, head=head, between=between, foot=foot),
        content_type="text/html; charset=utf-8",
    )


def _reply_stream(
    request: GatedHttpRequest, *, prompt: str, head: str, between: str, foot: str
) -> Iterator[str]:
    """The page up to the reply, the reply a word at a time, then, once the
    hold is settled, what it cost and the member's usage after it.
    """
    held = request.credit_hold
    assert held is not None
    yield head
    words = reply_words(prompt)
    for index, word in enumerate(words):
        if index:
            time.sleep(WORD_PAUSE_SECONDS)
        yield escape(word) if index == 0 else f" {escape(word)}"
    price = reply_price(words)
    held.settle(price)
    yield between
    yield render_to_string(
        f"{TEMPLATE}#charge",
        {
            "held": held.credits,
            "charged": price,
            "given_back": max(held.credits - price, Decimal(0)),
            "words": len(words),
            "per_word": ASSISTANT_CREDITS_PER_WORD,
        }
        | _usage_after(request.membership),
        request=request,
    )
    yield foot


def _usage_after(membership: Membership) -> dict[str, Decimal | None]:
    """The member's counted usage, limit and what remains, read after the settle."""
    organization = membership.organization
    _, counted = member_usage_get(membership=membership, period=current_period(organization))
    limit = limit_rules_get(organization=organization, membership_ids=[membership.pk]).limit_for(
        membership.pk
    )
    return {
        "used": counted,
        "limit": limit,
        "remaining": None if limit is None else max(limit - counted, Decimal(0)),
    }
