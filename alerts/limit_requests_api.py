"""Limit-increase requests over the API (SPEC §14): the host asks on a
member's behalf, and answers. Shapes only: the rules are
alerts/services/limit_requests.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field, StrictBool

from accounts.apiauth import request_organization
from accounts.selectors import membership_get
from alerts.models import LimitRequest
from alerts.request_models import MAX_REASON_LENGTH
from alerts.services import limit_requests
from config.apikit import Page, StrictSchema, paginate
from config.credits import Credits, CreditsOut
from config.errors import ErrorOut, InvalidInput, NotFound

router = Router()
TAGS = ["limit requests"]

StatusName = Literal["pending", "approved", "denied"]


class LimitRequestOut(Schema):
    id: int
    user: str
    credits: CreditsOut = Field(description="How many more credits the member asked for.")
    reason: str
    status: StatusName
    approved_credits: CreditsOut | None = Field(
        description="Approved: the credits added to the member's limit."
    )
    this_period_only: bool = Field(
        description="Approved for this billing period only: the limit returns at the next."
    )
    answer: str | None = Field(description="Denied: the admin's reason, if given.")
    resolved_by: str | None = Field(
        description="Who answered: an admin's email, or `API` for an answer through the API."
    )
    created_at: datetime
    resolved_at: datetime | None


class LimitRequestList(Schema):
    data: list[LimitRequestOut]
    next_cursor: str | None


class LimitRequestQuery(Page):
    status: StatusName | None = None


class LimitRequestIn(StrictSchema):
    user: str = Field(min_length=1, max_length=255)
    credits: Credits
    reason: str = Field(default="", max_length=MAX_REASON_LENGTH)


class ApproveIn(StrictSchema):
    credits: Credits | None = Field(
        default=None, description="The credits to add; by default, those asked for."
    )
    this_period_only: StrictBool = False


class DenyIn(StrictSchema):
    reason: str = Field(default="", max_length=MAX_REASON_LENGTH)


def _request_of(request: HttpRequest, request_id: int) -> LimitRequest:
    found = (
        LimitRequest.objects.filter(organization=request_organization(request), pk=request_id)
        .select_related("organization", "membership__user")
        .first()
    )
    if found is None:
        raise NotFound(
            f"No limit request {request_id} in this organization.", code="limit_request_not_found"
        )
    return found


@router.get("/limit-requests", response=LimitRequestList, tags=TAGS)
def limit_request_list(request: HttpRequest, query: Query[LimitRequestQuery]) -> dict[str, Any]:
    rows = LimitRequest.objects.filter(organization=request_organization(request)).select_related(
        "membership"
    )
    if query.status is not None:
        rows = rows.filter(status=query.status)
    return paginate(
        rows,
        query,
        lambda page: [limit_requests.limit_request_data(row) for row in page],
        newest_first=True,
    )


@router.post("/limit-requests", response={201: LimitRequestOut, 409: ErrorOut}, tags=TAGS)
def limit_request_create(request: HttpRequest, payload: LimitRequestIn) -> Status[dict[str, Any]]:
    organization = request_organization(request)
    try:
        membership = membership_get(organization=organization, external_id=payload.user)
    except NotFound as error:  # a body field that names no one: as for consume
        raise InvalidInput(error.message, code="unknown_user", field="user") from None
    created = limit_requests.limit_request_create(
        organization=organization,
        membership=membership,
        credits=payload.credits,
        reason=payload.reason,
    )
    return Status(201, limit_requests.limit_request_data(created))


@router.post(
    "/limit-requests/{id}/approve", response={200: LimitRequestOut, 409: ErrorOut}, tags=TAGS
)
def limit_request_approve(request: HttpRequest, id: int, payload: ApproveIn) -> dict[str, Any]:
    approved = limit_requests.limit_request_approve(
        request=_request_of(request, id),
        by=None,
        credits=payload.credits,
        this_period_only=payload.this_period_only,
    )
    return limit_requests.limit_request_data(approved)


@router.post("/limit-requests/{id}/deny", response={200: LimitRequestOut, 409: ErrorOut}, tags=TAGS)
def limit_request_deny(request: HttpRequest, id: int, payload: DenyIn) -> dict[str, Any]:
    denied = limit_requests.limit_request_deny(
        request=_request_of(request, id), by=None, answer=payload.reason
    )
    return limit_requests.limit_request_data(denied)
