from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from django.http import HttpRequest, JsonResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field, StrictBool, field_validator

from accounts.apiauth import request_organization
from accounts.models import Membership
from accounts.selectors import membership_get, memberships_by_external_id
from alerts.services import changes, consume, ingest
from billing import balance, meter_selectors, selectors
from billing.models import CustomLimit
from billing.rules import Decision
from config.apikit import (
    Page,
    StrictSchema,
    paginate,
    read_only,
    round_trip_put,
)
from config.credits import Credits, CreditsOrZero, CreditsOut
from config.errors import ErrorOut, InvalidInput, NotFound

router = Router()

SourceName = Literal["assistant", "agent", "agent_external", "workflow", "api"]
ExcludableSource = Literal["agent_external", "workflow"]
MAX_BATCH = 1000
ZERO = Decimal(0)


def _utc(moment: datetime | None) -> datetime | None:
    """Timestamps without an offset are read as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


MAX_PROPERTIES_DEPTH = 32
# An event's `properties`, written as compact JSON with non-ASCII characters
# escaped (as they are measured: the same whatever encoding the client chose).
# Bounded so that the largest valid batch has a known size, under the body
# limit (DATA_UPLOAD_MAX_MEMORY_SIZE), rather than failing on it.
MAX_PROPERTIES_BYTES = 4096


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _plain_json(value: Any) -> Any:
    """`properties` are kept as the JSON they came as. The API's parser reads
    every number with a fraction as a Decimal (for exact credits); here such
    numbers become JSON numbers again, which a JSON column can hold.
    """
    if isinstance(value, Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("numbers must be finite")
        return number
    if isinstance(value, dict):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_json(item) for item in value]
    return value


def _properties(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if _depth(value) > MAX_PROPERTIES_DEPTH:
        raise ValueError(f"must not nest more than {MAX_PROPERTIES_DEPTH} levels deep")
    plain = _plain_json(value)
    size = len(json.dumps(plain, separators=(",", ":")))
    if size > MAX_PROPERTIES_BYTES:
        raise ValueError(
            f"must be at most {MAX_PROPERTIES_BYTES:,} bytes as compact JSON (it is {size:,})"
        )
    return plain


class UsageEventIn(StrictSchema):
    idempotency_key: str = Field(min_length=1, max_length=255)
    user: str | None = Field(default=None, min_length=1, max_length=255)
    credits: CreditsOrZero | None = Field(
        default=None,
        description="Required (> 0) for the `credits` meter. For another meter it may be 0, "
        "and when omitted is `quantity` x the meter's `credits_per_unit` (0 without one).",
    )
    source: SourceName = "assistant"
    meter: str = Field(default="credits", min_length=1, max_length=64)
    quantity: CreditsOrZero | None = Field(
        default=None,
        description="For a meter other than `credits`: required for `sum` and `max`, "
        "1 when omitted for `count` and `unique_count`.",
    )
    timestamp: datetime | None = None
    properties: dict[str, Any] | None = None

    _utc = field_validator("timestamp")(_utc)
    _properties = field_validator("properties")(_properties)


class UsageBatchIn(StrictSchema):
    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_BATCH)


class IngestOut(Schema):
    accepted: int
    duplicates: int


class ConsumeIn(StrictSchema):
    user: str = Field(min_length=1, max_length=255)
    credits: Credits
    source: SourceName = "assistant"
    idempotency_key: str = Field(min_length=1, max_length=255)


class CheckIn(StrictSchema):
    user: str = Field(min_length=1, max_length=255)
    credits: Credits
    source: SourceName = "assistant"


class AllowedOut(Schema):
    allowed: Literal[True]
    used: CreditsOut
    limit: CreditsOut | None
    remaining: CreditsOut | None
    resets_at: datetime


class RefusedOut(Schema):
    allowed: Literal[False]
    reason: Literal["user_limit_reached", "organization_credits_exhausted"]
    message: str
    used: CreditsOut
    limit: CreditsOut | None
    balance: CreditsOut | None = Field(
        default=None,
        description="For `organization_credits_exhausted` with a credit balance: the balance "
        "before the action (`limit` is `used` + `balance`).",
    )
    resets_at: datetime


class SummaryMemberMeterOut(Schema):
    meter: str
    value: CreditsOut


class SummaryMeterOut(SummaryMemberMeterOut):
    unit: str


class SummaryUserOut(Schema):
    user: str
    used: CreditsOut
    counted: CreditsOut
    limit: CreditsOut | None
    meters: list[SummaryMemberMeterOut] = Field(
        description="The member's value of every meter this period, `credits` first (= `used`)."
    )


class SummaryOut(Schema):
    period_start: datetime
    period_end: datetime
    used: CreditsOut
    allowance: CreditsOut | None
    meters: list[SummaryMeterOut] = Field(
        description="The organization's value of every meter this period, `credits` first "
        "(= `used`), then the others by key; 0 where nothing was counted."
    )
    users: list[SummaryUserOut] = Field(
        description="Members with usage this period, the heaviest in credits first; members "
        "with meter values but no credits follow, by `user`."
    )


class LimitPolicyOut(Schema):
    enabled: bool
    default_limit: CreditsOut | None
    admins: list[str]
    excluded_sources: list[ExcludableSource]


class LimitPolicyIn(StrictSchema):
    enabled: StrictBool | None = None
    default_limit: Credits | None = None
    admins: list[str] | None = None
    excluded_sources: list[ExcludableSource] | None = None


class CustomLimitOut(Schema):
    user: str
    limit: CreditsOut | None


class CustomLimitList(Schema):
    data: list[CustomLimitOut]
    next_cursor: str | None


class CustomLimitIn(StrictSchema):
    user: str | None = read_only(description="The member, as in the path.")
    limit: Credits | None


class ExceedingOut(Schema):
    user: str
    used: CreditsOut
    counted: CreditsOut
    limit: CreditsOut
    crossed_at: datetime | None


class ExceedingList(Schema):
    data: list[ExceedingOut]
    next_cursor: str | None


def _decision_response(decision: Decision) -> JsonResponse:
    return JsonResponse(decision.as_answer(), status=200 if decision.allowed else 402)


@router.post("/usage", response={202: IngestOut, 409: ErrorOut}, tags=["usage"])
def usage_ingest(request: HttpRequest, payload: UsageBatchIn) -> Status[dict[str, int]]:
    result = ingest.usage_ingest(
        organization=request_organization(request),
        events=[
            ingest.UsageInput(
                idempotency_key=event.idempotency_key,
                credits=event.credits,
                user=event.user,
                source=event.source,
                meter=event.meter,
                quantity=event.quantity,
                timestamp=event.timestamp,
                properties=event.properties or {},
            )
            for event in payload.events
        ],
    )
    return Status(202, {"accepted": result.accepted, "duplicates": result.duplicates})


def _member(request: HttpRequest, external_id: str) -> Membership:
    try:
        return membership_get(organization=request_organization(request), external_id=external_id)
    except NotFound as error:
        raise InvalidInput(error.message, code="unknown_user", field="user") from None


@router.post("/consume", response={200: AllowedOut, 402: RefusedOut, 409: ErrorOut}, tags=["gate"])
def usage_consume(request: HttpRequest, payload: ConsumeIn) -> JsonResponse:
    result = consume.usage_consume(
        organization=request_organization(request),
        membership=_member(request, payload.user),
        credits=payload.credits,
        source=payload.source,
        idempotency_key=payload.idempotency_key,
    )
    return _decision_response(result.decision)


@router.post("/check", response={200: AllowedOut, 402: RefusedOut}, tags=["gate"])
def usage_check(request: HttpRequest, payload: CheckIn) -> JsonResponse:
    decision = balance.usage_check(
        organization=request_organization(request),
        membership=_member(request, payload.user),
        credits=payload.credits,
        source=payload.source,
    )
    return _decision_response(decision)


@router.get("/usage/summary", response=SummaryOut, tags=["usage"])
def usage_summary(request: HttpRequest) -> dict[str, Any]:
    organization = request_organization(request)
    period = selectors.current_period(organization)
    rows = list(selectors.member_usages_list(organization=organization, period=period))
    # Two queries for the meters, whatever their number and the members'.
    meters = meter_selectors.meters_list()
    totals = meter_selectors.meter_totals_get(organization=organization, period=period)
    credit_users = [
        (row.membership, row.used, row.counted)
        for row in sorted(rows, key=lambda row: row.used, reverse=True)
    ]
    meter_users = [
        (membership, ZERO, ZERO)
        for membership in totals.members_without({row.membership_id for row in rows})
    ]
    users = credit_users + meter_users
    rules = selectors.limit_rules_get(
        organization=organization, membership_ids=[membership.pk for membership, *_ in users]
    )
    used = selectors.organization_used(organization=organization, period=period)
    return {
        "period_start": period.start,
        "period_end": period.end,
        "used": used,
        "allowance": period.allowance(organization.credit_allowance),
        "meters": [
            {"meter": meter.key, "value": value, "unit": meter.unit}
            for meter, value in totals.organization_values(meters, credits_used=used)
        ],
        "users": [
            {
                "user": membership.external_id,
                "used": member_used,
                "counted": member_counted,
                "limit": rules.limit_for(membership.pk),
                "meters": [
                    {"meter": meter.key, "value": value}
                    for meter, value in totals.member_values(
                        membership.pk, meters, credits_used=member_used
                    )
                ],
            }
            for membership, member_used, member_counted in users
        ],
    }


def _policy_out(request: HttpRequest) -> dict[str, Any]:
    policy = selectors.limit_policy_get(organization=request_organization(request))
    admins = [m.external_id for m in policy.admins.order_by("external_id")] if policy.pk else []
    return {
        "enabled": policy.enabled,
        "default_limit": policy.default_limit,
        "admins": admins,
        "excluded_sources": policy.excluded_sources,
    }


@router.get("/user-limits", response=LimitPolicyOut, tags=["user limits"])
def limit_policy_detail(request: HttpRequest) -> dict[str, Any]:
    return _policy_out(request)


@round_trip_put(router, "/user-limits", response=LimitPolicyOut, tags=["user limits"])
def limit_policy_put(request: HttpRequest, payload: LimitPolicyIn) -> dict[str, Any]:
    organization = request_organization(request)
    given = payload.model_fields_set
    changes.limit_policy_update(
        organization=organization,
        enabled=payload.enabled,
        default_limit=payload.default_limit,
        clear_default_limit="default_limit" in given and payload.default_limit is None,
        admins=None
        if payload.admins is None
        else memberships_by_external_id(
            organization=organization, external_ids=payload.admins, field="admins"
        ),
        excluded_sources=payload.excluded_sources,
    )
    return _policy_out(request)


def _custom_out(custom: CustomLimit) -> dict[str, Any]:
    return {"user": custom.membership.external_id, "limit": custom.limit}


@router.get("/user-limits/custom", response=CustomLimitList, tags=["user limits"])
def custom_limit_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    customs = selectors.custom_limits_list(organization=request_organization(request))
    return paginate(customs, page, lambda rows: [_custom_out(c) for c in rows])


@router.get("/user-limits/exceeding", response=ExceedingList, tags=["user limits"])
def exceeding_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    organization = request_organization(request)
    rows = selectors.members_over_budget(
        organization=organization, period=selectors.current_period(organization)
    )
    return paginate(
        rows,
        page,
        lambda rows: [
            {
                "user": row.membership.external_id,
                "used": row.used,
                "counted": row.counted,
                "limit": row.limit,  # type: ignore[attr-defined]  # annotated by the selector
                "crossed_at": row.limit_reached_at,
            }
            for row in rows
        ],
    )


def _custom_limit_of(request: HttpRequest, user: str) -> tuple[Membership, CustomLimit | None]:
    membership = membership_get(organization=request_organization(request), external_id=user)
    custom = CustomLimit.objects.filter(membership=membership).first()
    return membership, custom


@router.get("/user-limits/custom/{path:user}", response=CustomLimitOut, tags=["user limits"])
def custom_limit_detail(request: HttpRequest, user: str) -> dict[str, Any]:
    _, custom = _custom_limit_of(request, user)
    if custom is None:
        raise _no_custom_limit(user)
    return _custom_out(custom)


@round_trip_put(
    router, "/user-limits/custom/{path:user}", response=CustomLimitOut, tags=["user limits"]
)
def custom_limit_put(request: HttpRequest, user: str, payload: CustomLimitIn) -> dict[str, Any]:
    membership, _ = _custom_limit_of(request, user)
    payload.check_read_only({"user": membership.external_id})
    custom = changes.custom_limit_set(
        organization=request_organization(request), membership=membership, limit=payload.limit
    )
    return _custom_out(custom)


@router.delete("/user-limits/custom/{path:user}", response={204: None}, tags=["user limits"])
def custom_limit_delete(request: HttpRequest, user: str) -> Status[None]:
    _, custom = _custom_limit_of(request, user)
    if custom is None:
        raise _no_custom_limit(user)
    changes.custom_limit_delete(custom_limit=custom)
    return Status(204, None)


def _no_custom_limit(user: str) -> NotFound:
    return NotFound(f"{user!r} has no custom limit.", code="custom_limit_not_found", field="user")
