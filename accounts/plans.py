"""Plans (SPEC §12): what the platform's staff define, and what organizations
on a plan use where they set none of their own. The alerts a plan gives its
organizations are alerts.models.PlanAlert.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypedDict, Unpack

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from accounts.models import Plan
from config.errors import Conflict, InvalidInput, NotFound


def plan_get(*, key: str, field: str = "plan") -> Plan:
    """The plan with this key; a 422 naming `field` if there is none."""
    plan = Plan.objects.filter(key=key).first()
    if plan is None:
        raise InvalidInput(f"No plan {key!r}.", code="unknown_plan", field=field)
    return plan


def plan_by_key(key: str) -> Plan:
    """The plan with this key, for staff tools: NotFound if there is none."""
    plan = Plan.objects.filter(key=key).first()
    if plan is None:
        raise NotFound(f"No plan {key!r}.", code="plan_not_found")
    return plan


def plan_create(
    *,
    key: str,
    name: str,
    credit_allowance: Decimal | None = None,
    default_limit: Decimal | None = None,
    credit_price: Decimal | None = None,
) -> Plan:
    try:
        validate_slug(key)
    except ValidationError:
        raise InvalidInput(
            f"{key!r} is not a valid key: use letters, numbers, hyphens or underscores.",
            code="invalid_key",
            field="key",
        ) from None
    if len(key) > 64:
        raise InvalidInput("The key is too long (64 characters at most).", code="invalid_key")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("The name must be 1 to 200 characters.", code="invalid_name")
    if credit_price is not None and credit_price < 0:
        raise InvalidInput("credit_price: must not be negative.", code="invalid")
    try:
        with transaction.atomic():
            return Plan.objects.create(
                key=key,
                name=name,
                credit_allowance=credit_allowance,
                default_limit=default_limit,
                credit_price=credit_price,
            )
    except IntegrityError:
        raise Conflict(f"A plan with the key {key!r} already exists.", code="plan_exists") from None


class PlanChanges(TypedDict, total=False):
    """What `plan_update` may change; None clears a value."""

    name: str
    credit_allowance: Decimal | None
    default_limit: Decimal | None
    credit_price: Decimal | None


def plan_update(*, plan: Plan, **changes: Unpack[PlanChanges]) -> list[str]:
    """Change what is given; returns the names of the fields that changed.
    What the organizations on it make of it is alerts.services.changes.plan_update's.
    """
    changed = []
    if "name" in changes:
        name = changes["name"].strip()
        if not name or len(name) > 200:
            raise InvalidInput("The name must be 1 to 200 characters.", code="invalid_name")
        if name != plan.name:
            plan.name = name
            changed.append("name")
    for field in ("credit_allowance", "default_limit", "credit_price"):
        if field not in changes:
            continue
        value = changes[field]
        if value is not None and (value < 0 if field == "credit_price" else value <= 0):
            floor = "must not be negative" if field == "credit_price" else "must be greater than 0"
            raise InvalidInput(f"{field}: {floor}.", code="invalid", field=field)
        if value != getattr(plan, field):
            setattr(plan, field, value)
            changed.append(field)
    if changed:
        plan.save(update_fields=changed)
    return changed
