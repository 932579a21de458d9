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
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from decimal import Decimal
from functools import wraps
from typing import Any, Concatenate, ParamSpec, cast

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import Membership, Organization
from accounts.web import OrganizationHttpRequest, View, organization_required
from alerts.request_forms import LimitRequestForm
from alerts.services.consume import usage_consume
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
    """

    credit_decision: Decision | None


GatedView = Callable[Concatenate[GatedHttpRequest, P], HttpResponse]
CostFunction = Callable[[OrganizationHttpRequest], "Decimal | None"]


def credit_gate(
    *,
    cost: Decimal | CostFunction,
    source: str = Source.ASSISTANT,
    methods: Collection[str] = ("POST",),
) -> Callable[[GatedView[P]], View[P]]:
    """Charge `cost` credits from `source` before the view runs; refuse with 402.

    - `cost`: a Decimal, or a callable taking the request and returning the
      credits to charge for it (to charge by input), or None to charge
      nothing (e.g. the input is invalid and the view will show the errors).
    - `methods`: the HTTP methods that spend credits. POST only by default:
      a GET shows the page and must stay free and safe to repeat.
    - Implies `@organization_required`: an anonymous visitor is sent to log
      in, a user without an organization gets the 403 page.

    The charge is committed before the view runs: holding the gate's row
    locks for the whole view would serialize every action of the member and
    the organization. So if the view fails after the gate let it through,
    the credits stay spent.
    """
    if source not in Source.values:
        raise ValueError(f"Unknown source {source!r}; one of {', '.join(Source.values)}.")
    fixed_cost = None if callable(cost) else parse_credits(cost)
    gated_methods = frozenset(method.upper() for method in methods)

    def decorator(view: GatedView[P]) -> View[P]:
        @wraps(view)
        def gate(
            request: OrganizationHttpRequest, *args: P.args, **kwargs: P.kwargs
        ) -> HttpResponse:
            gated = cast(GatedHttpRequest, request)
            gated.credit_decision = None
            if request.method in gated_methods:
                credits = fixed_cost if fixed_cost is not None else _cost_of(cost, request)
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


def _cost_of(cost: Decimal | CostFunction, request: OrganizationHttpRequest) -> Decimal | None:
    assert callable(cost)
    credits = cost(request)
    return None if credits is None else parse_credits(credits)


def blocked_response(
    request: OrganizationHttpRequest, *, decision: Decision, cost: Decimal | None = None
) -> HttpResponse:
    """The blocked-action notice with 402: only the notice for htmx, else the page."""
    return render(
        request,
        f"{BLOCKED_TEMPLATE}#notice" if wants_fragment(request) else BLOCKED_TEMPLATE,
        blocked_notice_context(
            organization=request.membership.organization,
            decision=decision,
            cost=cost,
            membership=request.membership,
        )
        | {"back_url": request.get_full_path()},
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
