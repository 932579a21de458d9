"""Plans (SPEC §12): what the platform's staff define, and what organizations
on a plan use where they set none of their own. The alerts a plan gives its
organizations are alerts.models.PlanAlert.
"""

from __future__ import annotations

from decimal import Decimal

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
