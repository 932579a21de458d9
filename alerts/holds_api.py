"""Holds over the API (SPEC §13): hold before the work, settle or release
after. Shapes only: the rules are alerts/services/holds.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from ninja import Query, Router, Schema
from pydantic import Field

from accounts.apiauth import request_organization
from accounts.selectors import membership_get
from alerts.services import holds
from billing.api import RefusedOut, SourceName
from billing.models import HOLD_EXPIRES_IN_DEFAULT, HOLD_EXPIRES_IN_MAX, CreditHold, HoldStatus
from config.apikit import Page, StrictSchema, paginate
from config.credits import Credits, CreditsOrZero, CreditsOut
from config.errors import ErrorOut, InvalidInput, NotFound

router = Router()
TAGS = ["holds"]

StatusName = Literal["held", "settled", "released", "expired"]


class HoldIn(StrictSchema):
    user: str = Field(min_length=1, max_length=255)
    credits: Credits
    source: SourceName = "assistant"
    idempotency_key: str = Field(min_length=1, max_length=255)
    expires_in: int = Field(
        default=HOLD_EXPIRES_IN_DEFAULT,
        ge=1,
        le=HOLD_EXPIRES_IN_MAX,
        description="Seconds until the hold expires unless settled or released.",
    )


class HeldOut(Schema):
    id: int
    allowed: Literal[True]
    held: CreditsOut
    expires_at: datetime
    used: CreditsOut = Field(description="The member's usage toward their limit, holds included.")
    limit: CreditsOut | None
    remaining: CreditsOut | None


class SettleIn(StrictSchema):
    credits: CreditsOrZero = Field(
        description="What the work cost: recorded as usage, never refused; may exceed the hold."
    )


class HoldOut(Schema):
    id: int
    user: str | None = Field(description="None once the member was removed.")
    credits: CreditsOut
    source: SourceName
    status: StatusName
    expires_at: datetime
    settled_credits: CreditsOut | None
    created_at: datetime


class HoldList(Schema):
    data: list[HoldOut]
    next_cursor: str | None


class HoldQuery(Page):
    status: StatusName | None = None


@router.post("/holds", response={201: HeldOut, 402: RefusedOut, 409: ErrorOut}, tags=TAGS)
def hold_create(request: HttpRequest, payload: HoldIn) -> JsonResponse:
    organization = request_organization(request)
    try:
        membership = membership_get(organization=organization, external_id=payload.user)
    except NotFound as error:  # a body field that names no one: as for consume
        raise InvalidInput(error.message, code="unknown_user", field="user") from None
    answer = holds.hold_create(
        organization=organization,
        membership=membership,
        credits=payload.credits,
        source=payload.source,
        idempotency_key=payload.idempotency_key,
        expires_in=payload.expires_in,
    )
    return JsonResponse(answer.body, status=answer.status_code)


def _status_is(status: str, now: datetime) -> Q:
    """A hold past its expiry is expired, whether or not that was written yet."""
    due = Q(status=HoldStatus.HELD, expires_at__lte=now)
    if status == HoldStatus.HELD:
        return Q(status=HoldStatus.HELD, expires_at__gt=now)
    if status == HoldStatus.EXPIRED:
        return Q(status=HoldStatus.EXPIRED) | due
    return Q(status=status)


@router.get("/holds", response=HoldList, tags=TAGS)
def hold_list(request: HttpRequest, query: Query[HoldQuery]) -> dict[str, Any]:
    now = timezone.now()
    rows = CreditHold.objects.filter(organization=request_organization(request)).select_related(
        "membership"
    )
    if query.status is not None:
        rows = rows.filter(_status_is(query.status, now))
    return paginate(
        rows, query, lambda page: [holds.hold_data(row, now) for row in page], newest_first=True
    )


@router.get("/holds/{id}", response=HoldOut, tags=TAGS)
def hold_detail(request: HttpRequest, id: int) -> dict[str, Any]:
    return holds.hold_data(holds.hold_get(organization=request_organization(request), hold_id=id))


@router.post("/holds/{id}/settle", response={200: HoldOut, 404: ErrorOut, 409: ErrorOut}, tags=TAGS)
def hold_settle(request: HttpRequest, id: int, payload: SettleIn) -> dict[str, Any]:
    settled = holds.hold_settle(
        organization=request_organization(request), hold_id=id, credits=payload.credits
    )
    return holds.hold_data(settled)


@router.post(
    "/holds/{id}/release", response={200: HoldOut, 404: ErrorOut, 409: ErrorOut}, tags=TAGS
)
def hold_release(request: HttpRequest, id: int) -> dict[str, Any]:
    released = holds.hold_release(organization=request_organization(request), hold_id=id)
    return holds.hold_data(released)
