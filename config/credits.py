"""Credits are exact decimals: at most 6 fractional digits, never floats."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Annotated, Any

from django import forms
from django.db import models
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CREDIT_MAX_DIGITS = 20
CREDIT_DECIMAL_PLACES = 6
CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_DECIMAL_PLACES)
MAX_CREDITS = Decimal(10) ** (CREDIT_MAX_DIGITS - CREDIT_DECIMAL_PLACES) - CREDIT_QUANTUM


class CreditsError(ValueError):
    pass


def credits_field(**kwargs: Any) -> models.DecimalField[Any, Any]:
    return models.DecimalField(
        max_digits=CREDIT_MAX_DIGITS, decimal_places=CREDIT_DECIMAL_PLACES, **kwargs
    )


def parse_credits(raw: object, *, allow_zero: bool = False) -> Decimal:
    """Read credits from a JSON number (parsed as Decimal), a decimal string or an int.

    Floats are refused: by the time a value is a float it may already be inexact.
    """
    if isinstance(raw, bool) or not isinstance(raw, (Decimal, int, str)):
        raise CreditsError("must be a number or a decimal string")
    if isinstance(raw, str) and not raw.isascii():
        # Decimal() reads any script's digits; the API documents ASCII ones only.
        raise CreditsError("must be a number or a decimal string")
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise CreditsError("must be a number or a decimal string") from None
    if not value.is_finite():
        raise CreditsError("must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise CreditsError("must not be negative" if allow_zero else "must be greater than 0")
    if value > MAX_CREDITS:
        raise CreditsError(f"must be at most {format_credits(MAX_CREDITS)}")
    if value != value.quantize(CREDIT_QUANTUM, rounding=ROUND_DOWN):
        raise CreditsError(f"must have at most {CREDIT_DECIMAL_PLACES} fractional digits")
    return value.quantize(CREDIT_QUANTUM)


def format_credits(value: Decimal) -> str:
    """The shortest exact decimal string: 5, 0.1, 1234.5 (never 1E+3)."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def readable_credits(value: Decimal | int | str) -> str:
    """Credits for people to read: every digit `format_credits` writes, with
    the thousands grouped (12,500 and 1,234.5). Pages, emails and the
    refusal's sentence use it; the API's numbers and the CSV stay plain.
    """
    exact = format_credits(value if isinstance(value, Decimal) else Decimal(value))
    # Formatting the shortest exact string keeps its digits: no rounding, no exponent.
    return format(Decimal(exact), ",f")


def _credits_validator(allow_zero: bool) -> Any:
    def validate(raw: object) -> Decimal:
        return parse_credits(raw, allow_zero=allow_zero)

    return BeforeValidator(validate)


_credits_out = PlainSerializer(format_credits, return_type=str, when_used="always")
_credits_in_schema = WithJsonSchema(
    {
        "oneOf": [{"type": "string", "pattern": r"^\d+(\.\d{1,6})?$"}, {"type": "number"}],
        "description": "Credits: a decimal with at most 6 fractional digits.",
    },
    mode="validation",
)
_credits_out_schema = WithJsonSchema(
    {
        "type": "string",
        "pattern": r"^-?\d+(\.\d{1,6})?$",
        "description": "Credits, as an exact decimal string.",
    },
    mode="serialization",
)

# Request fields accept a JSON number or a decimal string; every credit field goes out as a string.
Credits = Annotated[
    Decimal,
    _credits_validator(allow_zero=False),
    _credits_out,
    _credits_in_schema,
    _credits_out_schema,
]
CreditsOrZero = Annotated[
    Decimal,
    _credits_validator(allow_zero=True),
    _credits_out,
    _credits_in_schema,
    _credits_out_schema,
]
CreditsOut = Annotated[Decimal, _credits_out, _credits_out_schema]


class CreditsFormField(forms.Field):
    """A form field for credits: parsed exactly, with the API's rules and messages."""

    MAX_LENGTH = 40

    def __init__(self, *, allow_zero: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget",
            forms.TextInput(attrs={"inputmode": "decimal", "maxlength": self.MAX_LENGTH}),
        )
        super().__init__(**kwargs)
        self.allow_zero = allow_zero

    def prepare_value(self, value: Any) -> Any:
        return format_credits(value) if isinstance(value, Decimal) else value

    def to_python(self, value: Any) -> Decimal | None:
        text = str(value).strip() if value is not None else ""
        if not text:
            return None
        if len(text) > self.MAX_LENGTH:
            raise forms.ValidationError(
                f"Ensure this value has at most {self.MAX_LENGTH} characters.", code="max_length"
            )
        try:
            return parse_credits(text, allow_zero=self.allow_zero)
        except CreditsError as error:
            message = str(error)
            if message.startswith("must be a number"):
                message = "Enter a number, such as 500 or 12.5."
            else:
                message = f"The number {message}."
            raise forms.ValidationError(message, code="invalid") from None


def percent_of(value: Decimal, of: Decimal | None) -> int | None:
    """Whole percent, rounded down, so 99.9% never reads as 100%; None without `of`."""
    if of is None:
        return None
    return int(value * 100 / of)
