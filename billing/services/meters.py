"""Meters (SPEC §10): the platform defines them, for every organization, with
`create_meter` or in the Django admin; both call `meter_create`.

A meter's key, aggregation and property are fixed once it exists (its totals
were kept by them): `meter_update` changes only its name, unit and price.
The meter `credits` is built in and is no row: its key is refused.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from billing.models import CREDITS_METER, Aggregation, Meter
from config.credits import CreditsError, parse_credits
from config.errors import Conflict, InvalidInput


def _max_length(field: str) -> int:
    length = Meter._meta.get_field(field).max_length  # type: ignore[union-attr]
    assert isinstance(length, int)
    return length


def _validate_key(key: str) -> str:
    try:
        validate_slug(key)
    except ValidationError:
        raise InvalidInput(
            f"key: {key!r} is not a valid key: use letters, numbers, hyphens or underscores.",
            code="invalid",
            field="key",
        ) from None
    if len(key) > _max_length("key"):
        raise InvalidInput(
            f"key: must be at most {_max_length('key')} characters.", code="invalid", field="key"
        )
    # Any spelling of it: an event naming `Credits` must not find another meter.
    if key.lower() == CREDITS_METER:
        raise InvalidInput(
            f"key: {key!r} names the built-in meter {CREDITS_METER!r}; choose another key.",
            code="meter_built_in",
            field="key",
        )
    return key


def _validate_text(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidInput(f"{field}: must not be empty.", code="invalid", field=field)
    if len(value) > _max_length(field):
        raise InvalidInput(
            f"{field}: must be at most {_max_length(field)} characters.",
            code="invalid",
            field=field,
        )
    if not value.isprintable():
        raise InvalidInput(
            f"{field}: must not contain control characters.", code="invalid", field=field
        )
    return value


def _validate_property(aggregation: str, property_name: str) -> str:
    if aggregation == Aggregation.UNIQUE_COUNT:
        if not property_name.strip():
            raise InvalidInput(
                "property: a unique_count meter needs the event property whose distinct "
                "values it counts.",
                code="invalid",
                field="property",
            )
        return _validate_text(property_name, "property")
    if property_name:
        raise InvalidInput(
            f"property: only a unique_count meter has a property; a {aggregation} meter "
            "reads the events' quantity.",
            code="invalid",
            field="property",
        )
    return ""


def _validate_credits_per_unit(credits_per_unit: Decimal | None) -> Decimal | None:
    if credits_per_unit is None:
        return None
    try:
        return parse_credits(credits_per_unit, allow_zero=True)
    except CreditsError as error:
        raise InvalidInput(
            f"credits_per_unit: {error}.", code="invalid", field="credits_per_unit"
        ) from None


def meter_validate(
    *,
    key: str,
    name: str,
    unit: str,
    aggregation: str,
    property: str = "",
    credits_per_unit: Decimal | None = None,
) -> Meter:
    """The meter these values make, unsaved; a 422 naming the field at fault."""
    if aggregation not in Aggregation.values:
        raise InvalidInput(
            f"aggregation: must be one of {', '.join(Aggregation.values)}.",
            code="invalid",
            field="aggregation",
        )
    return Meter(
        key=_validate_key(key),
        name=_validate_text(name, "name"),
        unit=_validate_text(unit, "unit"),
        aggregation=aggregation,
        property=_validate_property(aggregation, property),
        credits_per_unit=_validate_credits_per_unit(credits_per_unit),
    )


def meter_create(
    *,
    key: str,
    name: str,
    unit: str,
    aggregation: str,
    property: str = "",
    credits_per_unit: Decimal | None = None,
) -> Meter:
    """Define a meter for every organization. A key taken is a 409, nothing stored."""
    meter = meter_validate(
        key=key,
        name=name,
        unit=unit,
        aggregation=aggregation,
        property=property,
        credits_per_unit=credits_per_unit,
    )
    try:
        with transaction.atomic():
            meter.save(force_insert=True)
    except IntegrityError:
        raise Conflict(
            f"key: a meter with the key {meter.key!r} already exists.",
            code="meter_exists",
            field="key",
        ) from None
    return meter


def meter_update(
    *, meter: Meter, name: str, unit: str, credits_per_unit: Decimal | None
) -> list[str]:
    """Change what may change; returns the names of the fields changed."""
    values = {
        "name": _validate_text(name, "name"),
        "unit": _validate_text(unit, "unit"),
        "credits_per_unit": _validate_credits_per_unit(credits_per_unit),
    }
    changed = [field for field, value in values.items() if getattr(meter, field) != value]
    for field in changed:
        setattr(meter, field, values[field])
    if changed:
        meter.save(update_fields=changed)
    return changed
