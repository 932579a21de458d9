"""`{% load credits %}` then `{{ value|credits }}`: exact credits, "—" for none."""

from __future__ import annotations

from decimal import Decimal

from django import template

from billing.credits import format_credits

register = template.Library()

NO_VALUE = "—"


@register.filter(name="credits")
def credits_filter(value: Decimal | int | str | None) -> str:
    """5, 0.1, 1234.5 as `format_credits` writes them; "—" when there is no value
    (no limit, no allowance). Floats are refused upstream, so none arrive here.
    """
    if value is None or value == "":
        return NO_VALUE
    return format_credits(value if isinstance(value, Decimal) else Decimal(value))
