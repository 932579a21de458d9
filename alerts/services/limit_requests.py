"""Limit-increase requests (SPEC §14): a member blocked at their cap asks
for more credits; an admin approves or denies.

- **Asked**: one pending request per member (the unique index says so under
  concurrency: a second is 409 `request_pending`). The admins the blocked
  notice names (billing.selectors.admins_to_ask) are emailed; webhook
  `limit_request.created`.
- **Approved**: the member's custom limit becomes their limit in force
  (their custom limit, else the default; none: nothing to raise) plus the
  credits approved, through the same service as any custom limit, so the
  member may act at once and alerts are evaluated. "This period only": at
  the end of the period it was approved in, the limit returns to what it
  was (`limit_requests_revert_due`, the beat, within a minute; once, as
  the row is taken `FOR UPDATE SKIP LOCKED` and marked).
- **Denied**, with an optional answer. The member is emailed the outcome;
  webhooks `limit_request.approved` / `limit_request.denied`.

A request is resolved once: approve and deny take its row for update and
refuse one already resolved (409 `request_closed`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Membership, Organization
from alerts.events import credit_event_write
from alerts.models import (
    LIMIT_REQUEST_APPROVED,
    LIMIT_REQUEST_CREATED,
    LIMIT_REQUEST_DENIED,
    LimitRequest,
    LimitRequestStatus,
)
from alerts.request_models import MAX_REASON_LENGTH
from alerts.services.changes import custom_limit_delete, custom_limit_set
from billing.models import CustomLimit
from billing.periods import organization_period
from billing.selectors import admins_to_ask, limit_rules_get
from config.credits import MAX_CREDITS
from config.dbretry import retry_on_conflict
from config.errors import Conflict, InvalidInput


def limit_request_create(
    *, organization: Organization, membership: Membership, credits: Decimal, reason: str = ""
) -> LimitRequest:
    """The member asks for `credits` more; their admins are told."""
    _validate_credits(credits)
    reason = _validate_text(reason, "reason")
    with transaction.atomic():
        try:
            with transaction.atomic():
                request = LimitRequest.objects.create(
                    organization=organization, membership=membership, credits=credits, reason=reason
                )
        except IntegrityError:
            raise Conflict(
                f"{membership.display_name} already has a request waiting for an answer: "
                "one at a time.",
                code="request_pending",
            ) from None
        audit_record(
            organization=organization,
            action="limit_request.created",
            target_type="limit_request",
            target_id=request.pk,
            after=_snapshot(request),
        )
        credit_event_write(
            organization,
            LIMIT_REQUEST_CREATED,
            limit_request_data(request),
            email_to=[admin.user.email for admin in admins_to_ask(organization=organization)],
        )
    return request


@retry_on_conflict
def limit_request_approve(
    *,
    request: LimitRequest,
    by: Membership | None,
    credits: Decimal | None = None,
    this_period_only: bool = False,
) -> LimitRequest:
    """Raise the member's limit by `credits` (the request's by default)."""
    if credits is not None:
        _validate_credits(credits)
    with transaction.atomic():
        request = _lock_pending(request)
        organization, membership = request.organization, request.membership
        granted = credits if credits is not None else request.credits
        custom = CustomLimit.objects.filter(membership=membership).first()
        current = limit_rules_get(organization=organization, membership_ids=[membership.pk])
        limit_now = current.limit_for(membership.pk)
        if limit_now is None:
            raise InvalidInput(
                f"{membership.display_name} has no limit to raise: they are not limited.",
                code="not_limited",
            )
        now = timezone.now()
        request.status = LimitRequestStatus.APPROVED
        request.approved_credits = granted
        request.this_period_only = this_period_only
        request.had_custom_limit = custom is not None
        request.limit_before = custom.limit if custom is not None else None
        request.limit_after = limit_now + granted
        request.revert_at = organization_period(organization, now).end if this_period_only else None
        _resolve(request, by, now)
        custom_limit_set(
            organization=organization, membership=membership, limit=limit_now + granted
        )
        credit_event_write(
            organization,
            LIMIT_REQUEST_APPROVED,
            limit_request_data(request) | {"limit": limit_now + granted},
            email_to=[membership.user.email],
        )
    return request


@retry_on_conflict
def limit_request_deny(
    *, request: LimitRequest, by: Membership | None, answer: str = ""
) -> LimitRequest:
    answer = _validate_text(answer, "reason")
    with transaction.atomic():
        request = _lock_pending(request)
        request.status = LimitRequestStatus.DENIED
        request.answer = answer
        _resolve(request, by, timezone.now())
        credit_event_write(
            request.organization,
            LIMIT_REQUEST_DENIED,
            limit_request_data(request),
            email_to=[request.membership.user.email],
        )
    return request


def limit_request_withdraw(*, request: LimitRequest) -> None:
    """The member takes back their pending request (none: nothing to do)."""
    with transaction.atomic():
        locked = LimitRequest.objects.select_for_update().filter(
            pk=request.pk, status=LimitRequestStatus.PENDING
        )
        found = locked.select_related("organization", "membership").first()
        if found is None:
            return
        audit_record(
            organization=found.organization,
            action="limit_request.withdrawn",
            target_type="limit_request",
            target_id=found.pk,
            before=_snapshot(found),
        )
        found.delete()


def pending_request_of(membership: Membership) -> LimitRequest | None:
    return LimitRequest.objects.filter(
        membership=membership, status=LimitRequestStatus.PENDING
    ).first()


def limit_requests_revert_due(*, now: Any = None) -> int:
    """Return the members approved for one period only to their former
    limit once that period has ended (the beat, every minute). Each request
    is taken once, even by two beats at the same time.
    """
    now = now or timezone.now()
    reverted = 0
    while True:
        with transaction.atomic():
            request = (
                LimitRequest.objects.select_for_update(skip_locked=True)
                .filter(revert_at__lte=now, reverted_at__isnull=True)
                .select_related("organization", "membership")
                .order_by("revert_at", "pk")
                .first()
            )
            if request is None:
                return reverted
            _revert(request)
            request.reverted_at = now
            request.save(update_fields=["reverted_at"])
            reverted += 1


def _revert(request: LimitRequest) -> None:
    """Back to the limit before the approval, unless an admin has set
    another since (theirs is the later decision).
    """
    custom = CustomLimit.objects.filter(membership=request.membership).first()
    if custom is None or custom.limit != request.limit_after:
        return
    if request.had_custom_limit:
        custom_limit_set(
            organization=request.organization,
            membership=request.membership,
            limit=request.limit_before,
        )
    else:
        custom_limit_delete(custom_limit=custom)


def _lock_pending(request: LimitRequest) -> LimitRequest:
    locked = (
        LimitRequest.objects.select_for_update()
        .select_related("organization", "membership__user")
        .filter(pk=request.pk)
        .first()
    )
    if locked is None or locked.status != LimitRequestStatus.PENDING:
        raise Conflict("This request has been answered already.", code="request_closed")
    return locked


def _resolve(request: LimitRequest, by: Membership | None, now: Any) -> None:
    before = {"status": LimitRequestStatus.PENDING.value}
    request.resolved_by = by
    request.resolved_by_label = by.user.email if by is not None else "API"
    request.resolved_at = now
    request.save()
    audit_record(
        organization=request.organization,
        action=f"limit_request.{request.status}",
        target_type="limit_request",
        target_id=request.pk,
        before=before,
        after=_snapshot(request),
    )


def _validate_credits(credits: Decimal) -> None:
    if credits <= 0 or credits > MAX_CREDITS:
        raise InvalidInput(
            "credits: must be greater than 0 and at most a credit amount can hold.",
            code="invalid",
            field="credits",
        )


def _validate_text(text: str, field: str) -> str:
    text = text.strip()
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"{field}: at most {MAX_REASON_LENGTH:,} characters.", code="invalid", field=field
        )
    return text


def _snapshot(request: LimitRequest) -> dict[str, Any]:
    return {
        "user": request.membership.external_id,
        "credits": str(request.credits),
        "status": request.status,
        "approved_credits": str(request.approved_credits) if request.approved_credits else None,
        "this_period_only": request.this_period_only,
    }


def limit_request_data(request: LimitRequest) -> dict[str, Any]:
    """A request as the API and its webhook events give it."""
    return {
        "id": request.pk,
        "user": request.membership.external_id,
        "credits": request.credits,
        "reason": request.reason,
        "status": request.status,
        "approved_credits": request.approved_credits,
        "this_period_only": request.this_period_only,
        "answer": request.answer or None,
        "resolved_by": request.resolved_by_label or None,
        "created_at": request.created_at,
        "resolved_at": request.resolved_at,
    }
