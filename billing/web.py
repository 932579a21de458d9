"""The credit gate for browser pages: `@credit_gate` and the blocked-action notice.

A host view that spends credits is decorated with `@credit_gate(cost=..., source=...)`.
The decorator asks the one gate there is (`alerts.services.consume.usage_consume`)
before the view runs, and when the gate refuses it answers for the view with
the blocked-action notice (HTTP 402): a full page, or only the notice when
htmx asked (`billing/blocked_notice.html#notice`).

    @require_http_methods(["GET", "POST"])
    @credit_gate(cost=Decimal(5), source=Source.ASSISTANT)
    def draft(request: GatedHttpRequest) -> HttpResponse:
        ...  # on POST, request.credit_decision holds usage after this action

htmx 2 does not swap a 4xx answer by default; static/js/app.js swaps 402.

Hold mode, `@credit_gate(cost=..., hold=True)`, is for work priced afterwards
(SPEC §13: a streamed reply, a long job). The gate *holds* `cost` credits
(`alerts.services.credit_hold.hold_credits`) rather than spending them: the
hold is allowed exactly as a consume of `cost` would be, refused with the same
402 notice, and counts against the limits until it is closed. The view gets
the open hold as `request.credit_hold` (a `HeldCredits`; `credit_decision`
stays None in this mode: nothing is spent yet) and calls
`request.credit_hold.settle(credits)` with what the work cost. The decorator
closes whatever the view left open:

- the view raises: the hold is released (nothing charged) and the error goes on;
- the view answers a `StreamingHttpResponse`: its content is wrapped so that
  the hold closes when the stream does. Streamed to its end, a hold the
  stream did not settle is settled for the credits held; a stream cut short
  (the client gone, an error, closed before its first chunk) releases it;
- any other response: settled for the credits held, unless the view settled
  or released it itself.

    @require_http_methods(["GET", "POST"])
    @credit_gate(cost=Decimal(5), source=Source.ASSISTANT, hold=True)
    def reply(request: GatedHttpRequest) -> HttpResponse:
        held = request.credit_hold  # None on a GET: nothing held
        ...  # held.settle(price) once the work says what it cost
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from decimal import Decimal
from functools import wraps
from typing import Any, Concatenate, ParamSpec, cast

from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render

from accounts.models import Membership, Organization
from accounts.web import OrganizationHttpRequest, View, organization_required
from alerts.request_forms import LimitRequestForm
from alerts.services.consume import usage_consume
from alerts.services.credit_hold import HeldCredits, HoldRefused, hold_credits
from alerts.services.limit_requests import pending_request_of
from billing.models import Source
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED, USER_LIMIT_REACHED, Decision
from billing.selectors import admins_to_ask
from config.credits import parse_credits
from config.dbretry import ConcurrentUpdate

P = ParamSpec("P")

BLOCKED_TEMPLATE = "billing/blocked_notice.html"
BLOCKED_STATUS = 402  # Payment Required: what the API answers for a refused consume, too.


class GatedHttpRequest(OrganizationHttpRequest):
    """A request that `@credit_gate` has let through.

    `credit_decision` is the gate's answer for the credits just spent (with
    `used`, `limit`, `remaining` after this action), or None when nothing was
    charged: a method the gate does not watch, or a cost callable that
    returned None. A view does its paid work only when it is set.

    `credit_hold`, in hold mode (`@credit_gate(..., hold=True)`), is the open
    hold of the credits the work may cost, None when nothing was held (and
    always None in the default mode); `credit_decision` is then None.
    """

    credit_decision: Decision | None
    credit_hold: HeldCredits | None


GatedView = Callable[Concatenate[GatedHttpRequest, P], HttpResponseBase]
CostFunction = Callable[[OrganizationHttpRequest], "Decimal | None"]


def credit_gate(
    *,
    cost: Decimal | CostFunction,
    source: str = Source.ASSISTANT,
    methods: Collection[str] = ("POST",),
    hold: bool = False,
) -> Callable[[GatedView[P]], View[P]]:
    """Charge `cost` credits from `source` before the view runs; refuse with 402.

    - `cost`: a Decimal, or a callable taking the request and returning the
      credits to charge for it (to charge by input), or None to charge
      nothing (e.g. the input is invalid and the view will show the errors).
    - `methods`: the HTTP methods that spend credits. POST only by default:
      a GET shows the page and must stay free and safe to repeat.
    - `hold`: hold `cost` credits (an estimate, or the most the work may
      cost) instead of spending them; the view settles what the work cost
      (see the module's docstring).
    - Implies `@organization_required`: an anonymous visitor is sent to log
      in, a user without an organization gets the 403 page.

    The charge is committed before the view runs: holding the gate's row
    locks for the whole view would serialize every action of the member and
    the organization. So if the view fails after the gate let it through,
    the credits stay spent; in hold mode they are given back.
    """
    if source not in Source.values:
        raise ValueError(f"Unknown source {source!r}; one of {', '.join(Source.values)}.")
    fixed_cost = None if callable(cost) else parse_credits(cost)
    gated_methods = frozenset(method.upper() for method in methods)

    def decorator(view: GatedView[P]) -> View[P]:
        @wraps(view)
        def gate(
            request: OrganizationHttpRequest, *args: P.args, **kwargs: P.kwargs
        ) -> HttpResponseBase:
            gated = cast(GatedHttpRequest, request)
            gated.credit_decision = None
            gated.credit_hold = None
            if request.method in gated_methods:
                credits = fixed_cost if fixed_cost is not None else _cost_of(cost, request)
                if credits is not None and hold:
                    try:
                        gated.credit_hold = hold_credits(
                            request.membership, credits=credits, source=source
                        )
                    except HoldRefused as refusal:
                        return blocked_response(
                            request, decision=refusal.decision, cost=credits, estimate=True
                        )
                    except ConcurrentUpdate as error:
                        return HttpResponse(error.message, status=error.status)
                    return _run_holding(gated.credit_hold, lambda: view(gated, *args, **kwargs))
                if credits is not None:
                    try:
                        decision = usage_consume(
                            organization=request.membership.organization,
                            membership=request.membership,
                            credits=credits,
                            source=source,
                        ).decision
                    except ConcurrentUpdate as error:
                        # Every retry met another transaction: nothing was spent.
                        return HttpResponse(error.message, status=error.status)
                    if not decision.allowed:
                        return blocked_response(request, decision=decision, cost=credits)
                    gated.credit_decision = decision
            return view(gated, *args, **kwargs)

        return organization_required(gate)

    return decorator


def _run_holding(held: HeldCredits, run_view: Callable[[], HttpResponseBase]) -> HttpResponseBase:
    """Run the view under an open hold and close what it leaves open: released
    if it raises, when its stream ends if it streams, else at once (settled
    for the credits held if the view neither settled nor released it).
    """
    try:
        response = run_view()
    except BaseException:
        held.abandon()
        raise
    if isinstance(response, StreamingHttpResponse):
        if response.is_async:
            held.abandon()
            raise TypeError("credit_gate(hold=True) wraps synchronous streams only.")
        chunks = cast(Iterator[bytes], response.streaming_content)  # not async: checked above
        response.streaming_content = held.closing_after(chunks)
    else:
        held.finish()
    return response


def _cost_of(cost: Decimal | CostFunction, request: OrganizationHttpRequest) -> Decimal | None:
    assert callable(cost)
    credits = cost(request)
    return None if credits is None else parse_credits(credits)


def blocked_response(
    request: OrganizationHttpRequest,
    *,
    decision: Decision,
    cost: Decimal | None = None,
    estimate: bool = False,
) -> HttpResponse:
    """The blocked-action notice with 402: only the notice for htmx, else the page.
    `estimate`: `cost` is what the action would have held, the most it may cost.
    """
    return render(
        request,
        f"{BLOCKED_TEMPLATE}#notice" if wants_fragment(request) else BLOCKED_TEMPLATE,
        blocked_notice_context(
            organization=request.membership.organization,
            decision=decision,
            cost=cost,
            membership=request.membership,
        )
        | {"back_url": request.get_full_path(), "cost_is_estimate": estimate},
        status=BLOCKED_STATUS,
    )


def blocked_notice_context(
    *,
    organization: Organization,
    decision: Decision,
    cost: Decimal | None = None,
    membership: Membership | None = None,
) -> dict[str, Any]:
    """What the notice template needs: why, usage and limit, reset, whom to ask.

    `balance_used_up`: the organization refused and keeps a credit balance
    (grants, balance alerts or a top-up): the notice speaks of the balance,
    which comes back with the next period's allowance (`allowance_returns`,
    when there is one) or a new grant, rather than of the allowance alone.
    """
    balance_used_up = (
        decision.reason == ORGANIZATION_CREDITS_EXHAUSTED
        and decision.balance is not None
        and organization.credit_balance_kept_since is not None
    )
    user_limit_reached = decision.reason == USER_LIMIT_REACHED
    # At their limit, the member may ask for more (SPEC §14): the form, or
    # the request already waiting.
    pending = (
        pending_request_of(membership) if user_limit_reached and membership is not None else None
    )
    return {
        "pending_request": pending,
        "limit_request_form": LimitRequestForm() if user_limit_reached and membership else None,
        "decision": decision,
        "user_limit_reached": user_limit_reached,
        "balance_used_up": balance_used_up,
        "allowance_returns": organization.credit_allowance is not None,
        "cost": cost,
        "admins": admins_to_ask(organization=organization),
    }


def wants_fragment(request: HttpRequest) -> bool:
    """htmx asked for a fragment (a boosted request wants the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted  # type: ignore[union-attr]
