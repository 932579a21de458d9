from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Schema, Status
from pydantic import Field, StrictBool, StrictInt

from accounts import selectors, services
from accounts.apiauth import request_organization
from accounts.models import Membership, Organization
from accounts.plans import plan_get
from alerts.services import changes
from billing.periods import organization_period
from billing.selectors import limit_default_in_force
from config.apikit import Page, StrictSchema, paginate
from config.credits import Credits, CreditsOut
from config.errors import ErrorOut
from config.money import Currency, Price

router = Router()

RoleName = Literal["admin", "member"]


ValueSourceName = Literal["organization", "plan"]


class OrganizationOut(Schema):
    slug: str
    name: str
    plan: str | None = Field(description="The key of its plan (SPEC §12); null: none.")
    credit_allowance: CreditsOut | None = Field(
        description="The allowance in force: the organization's own, else its plan's."
    )
    credit_allowance_source: ValueSourceName | None
    default_limit: CreditsOut | None = Field(
        description="The default per-user limit in force: the limits policy's own, else the "
        "plan's (set it with PUT /user-limits)."
    )
    default_limit_source: ValueSourceName | None
    block_when_exhausted: bool
    anchor_day: int
    period_start: datetime
    period_end: datetime
    period_allowance: CreditsOut | None = Field(
        description="This period's allowance: `credit_allowance`, prorated in a shorter "
        "period after the anchor day changed."
    )
    credit_price: CreditsOut | None = Field(
        description="The price in force of one credit in `currency` (null: no price): the "
        "organization's own, else its plan's."
    )
    credit_price_source: ValueSourceName | None
    currency: str


class OrganizationPatch(StrictSchema):
    slug: str | None = None
    name: str | None = None
    plan: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="A plan's key; null: no plan. Setting a value to null removes the "
        "organization's own, so that its plan's applies.",
    )
    credit_allowance: Credits | None = None
    block_when_exhausted: StrictBool | None = None
    anchor_day: StrictInt | None = None
    credit_price: Price | None = None
    currency: Currency | None = None


class MemberOut(Schema):
    user: str
    email: str
    name: str = Field(
        description="The member's name in this organization: the one set here, else the "
        "user's own name (empty if neither). Another organization never sees a name set here."
    )
    role: RoleName


class MemberList(Schema):
    data: list[MemberOut]
    next_cursor: str | None


class MemberCreate(StrictSchema):
    email: str
    name: str = Field(
        default="",
        description="Their name in this organization; a new user also gets it as their own.",
    )
    role: RoleName = "member"
    user: str | None = None


class MemberPatch(StrictSchema):
    name: str | None = Field(
        default=None,
        description="Their name in this organization only; empty: the user's own name again.",
    )
    role: RoleName | None = None
    user: str | None = None


def _organization_out(organization: Organization) -> dict[str, Any]:
    period = organization_period(organization, timezone.now())
    default_limit = limit_default_in_force(organization=organization)
    return {
        "slug": organization.slug,
        "name": organization.name,
        "plan": organization.plan.key if organization.plan else None,
        "credit_allowance": organization.credit_allowance,
        "credit_allowance_source": organization.source_of("credit_allowance"),
        "default_limit": default_limit.limit,
        "default_limit_source": default_limit.source,
        "block_when_exhausted": organization.block_when_exhausted,
        "anchor_day": organization.anchor_day,
        "period_start": period.start,
        "period_end": period.end,
        "period_allowance": period.allowance(organization.credit_allowance),
        "credit_price": organization.credit_price,
        "credit_price_source": organization.source_of("credit_price"),
        "currency": organization.currency,
    }


def _member_out(membership: Membership) -> dict[str, Any]:
    return {
        "user": membership.external_id,
        "email": membership.user.email,
        # As this organization names them: never a name another one set.
        "name": membership.member_name,
        "role": membership.role,
    }


@router.get("/organization", response=OrganizationOut, tags=["organization"])
def organization_detail(request: HttpRequest) -> dict[str, Any]:
    return _organization_out(request_organization(request))


@router.patch(
    "/organization", response={200: OrganizationOut, 409: ErrorOut}, tags=["organization"]
)
def organization_patch(request: HttpRequest, payload: OrganizationPatch) -> dict[str, Any]:
    given = payload.model_fields_set
    organization = changes.organization_update(
        organization=request_organization(request),
        slug=payload.slug,
        name=payload.name,
        plan=plan_get(key=payload.plan) if payload.plan is not None else None,
        clear_plan="plan" in given and payload.plan is None,
        credit_allowance=payload.credit_allowance,
        clear_allowance="credit_allowance" in given and payload.credit_allowance is None,
        anchor_day=payload.anchor_day,
        block_when_exhausted=payload.block_when_exhausted,
        credit_price=payload.credit_price,
        clear_price="credit_price" in given and payload.credit_price is None,
        currency=payload.currency,
    )
    return _organization_out(organization)


@router.get("/members", response=MemberList, tags=["members"])
def member_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    memberships = selectors.membership_list(organization=request_organization(request))
    return paginate(memberships, page, lambda rows: [_member_out(m) for m in rows])


@router.post("/members", response={201: MemberOut, 409: ErrorOut}, tags=["members"])
def member_create(request: HttpRequest, payload: MemberCreate) -> Status[dict[str, Any]]:
    membership = services.membership_create(
        organization=request_organization(request),
        email=payload.email,
        role=payload.role,
        name=payload.name,
        external_id=payload.user,
    )
    return Status(201, _member_out(membership))


@router.get("/members/{path:user}", response=MemberOut, tags=["members"])
def member_detail(request: HttpRequest, user: str) -> dict[str, Any]:
    return _member_out(
        selectors.membership_get(organization=request_organization(request), external_id=user)
    )


@router.patch("/members/{path:user}", response={200: MemberOut, 409: ErrorOut}, tags=["members"])
def member_patch(request: HttpRequest, user: str, payload: MemberPatch) -> dict[str, Any]:
    membership = selectors.membership_get(
        organization=request_organization(request), external_id=user
    )
    changes.membership_update(
        membership=membership, role=payload.role, name=payload.name, external_id=payload.user
    )
    return _member_out(membership)


@router.delete("/members/{path:user}", response={204: None}, tags=["members"])
def member_delete(request: HttpRequest, user: str) -> Status[None]:
    membership = selectors.membership_get(
        organization=request_organization(request), external_id=user
    )
    services.membership_delete(membership=membership)
    return Status(204, None)
