"""Pydantic's validation errors as sentences a client can act on.

Pydantic's own messages ("List should have at least 1 item after
validation, not 0", "Input should be a valid integer, unable to parse
string as an integer") describe its internals. Each error type it raises
for the API's schemas is written here once, as what the field must be; the
API's handler puts the field's name in front ("anchor_day: must be a whole
number."). A type not listed gets a plain sentence rather than pydantic's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def _number(value: Any) -> str:
    """1000 -> '1,000'; other values as they are."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _count(value: Any, noun: str) -> str:
    return f"{_number(value)} {noun}{'' if value == 1 else 's'}"


def _holds(ctx: Mapping[str, Any]) -> str:
    actual = ctx.get("actual_length")
    return "" if actual is None else f" (it holds {_number(actual)})"


def _custom(error: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    """A validator's own message (raised as ValueError), without pydantic's prefix."""
    cause = ctx.get("error")
    message = str(cause) if cause is not None else str(error.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message or "is not valid"


_WHOLE_NUMBER = "must be a whole number"
_NUMBER = "must be a number"
_BOOLEAN = "must be true or false"
_OBJECT = "must be a JSON object"
_LIST = "must be a list"
_STRING = "must be a string"
_DATETIME = "must be a date and time in ISO 8601, e.g. 2026-01-31T09:30:00Z"
_DATE = "must be a date in ISO 8601, e.g. 2026-01-31"

_Sentence = Callable[[Mapping[str, Any]], str]

# Error type -> the sentence, from the error's context (its `ctx`).
_SENTENCES: dict[str, _Sentence] = {
    "missing": lambda ctx: "is required",
    "extra_forbidden": lambda ctx: "is not a known field",
    "too_short": lambda ctx: (
        f"must hold at least {_count(ctx.get('min_length'), 'item')}{_holds(ctx)}"
    ),
    "too_long": lambda ctx: (
        f"must hold at most {_count(ctx.get('max_length'), 'item')}{_holds(ctx)}"
    ),
    "string_too_short": lambda ctx: (
        "must not be empty"
        if ctx.get("min_length") == 1
        else f"must be at least {_count(ctx.get('min_length'), 'character')} long"
    ),
    "string_too_long": lambda ctx: (
        f"must be at most {_count(ctx.get('max_length'), 'character')} long"
    ),
    "string_type": lambda ctx: _STRING,
    "string_unicode": lambda ctx: "must be valid Unicode text",
    "string_pattern_mismatch": lambda ctx: f"must match the pattern {ctx.get('pattern')}",
    "int_type": lambda ctx: _WHOLE_NUMBER,
    "int_parsing": lambda ctx: _WHOLE_NUMBER,
    "int_from_float": lambda ctx: _WHOLE_NUMBER,
    "int_parsing_size": lambda ctx: "is too large a number",
    "float_type": lambda ctx: _NUMBER,
    "float_parsing": lambda ctx: _NUMBER,
    "finite_number": lambda ctx: "must be a finite number",
    "decimal_type": lambda ctx: _NUMBER,
    "decimal_parsing": lambda ctx: _NUMBER,
    "decimal_max_digits": lambda ctx: f"must have at most {_count(ctx.get('max_digits'), 'digit')}",
    "decimal_max_places": lambda ctx: (
        f"must have at most {_count(ctx.get('decimal_places'), 'fractional digit')}"
    ),
    "decimal_whole_digits": lambda ctx: (
        f"must have at most {_count(ctx.get('whole_digits'), 'digit')} before the point"
    ),
    "bool_type": lambda ctx: _BOOLEAN,
    "bool_parsing": lambda ctx: _BOOLEAN,
    "greater_than": lambda ctx: f"must be greater than {_number(ctx.get('gt'))}",
    "greater_than_equal": lambda ctx: f"must be at least {_number(ctx.get('ge'))}",
    "less_than": lambda ctx: f"must be less than {_number(ctx.get('lt'))}",
    "less_than_equal": lambda ctx: f"must be at most {_number(ctx.get('le'))}",
    "multiple_of": lambda ctx: f"must be a multiple of {_number(ctx.get('multiple_of'))}",
    "literal_error": lambda ctx: f"must be one of {ctx.get('expected')}",
    "enum": lambda ctx: f"must be one of {ctx.get('expected')}",
    "dict_type": lambda ctx: _OBJECT,
    "model_type": lambda ctx: _OBJECT,
    "model_attributes_type": lambda ctx: _OBJECT,
    "list_type": lambda ctx: _LIST,
    "tuple_type": lambda ctx: _LIST,
    "set_type": lambda ctx: _LIST,
    "frozen_set_type": lambda ctx: _LIST,
    "iterable_type": lambda ctx: _LIST,
    "none_required": lambda ctx: "must be null",
    "datetime_type": lambda ctx: _DATETIME,
    "datetime_parsing": lambda ctx: _DATETIME,
    "datetime_from_date_parsing": lambda ctx: _DATETIME,
    "datetime_object_invalid": lambda ctx: _DATETIME,
    "date_type": lambda ctx: _DATE,
    "date_parsing": lambda ctx: _DATE,
    "date_from_datetime_parsing": lambda ctx: _DATE,
    "date_from_datetime_inexact": lambda ctx: _DATE,
    "timezone_aware": lambda ctx: "must include a UTC offset, e.g. 2026-01-31T09:30:00Z",
    "timezone_naive": lambda ctx: "must not include a UTC offset",
    "url_type": lambda ctx: "must be a URL",
    "url_parsing": lambda ctx: "must be a valid URL",
    "url_syntax_violation": lambda ctx: "must be a valid URL",
    "url_too_long": lambda ctx: (
        f"must be at most {_count(ctx.get('max_length'), 'character')} long"
    ),
    "url_scheme": lambda ctx: f"must be a URL starting with {ctx.get('expected_schemes')}",
    "uuid_type": lambda ctx: "must be a UUID",
    "uuid_parsing": lambda ctx: "must be a UUID",
    "json_invalid": lambda ctx: "must be valid JSON",
    "json_type": lambda ctx: "must be valid JSON",
}


def validation_sentence(error: Mapping[str, Any]) -> str:
    """What the field at fault must be, as a sentence without its name and
    without a final stop: "must be a whole number"."""
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return _custom(error, ctx)
    sentence = _SENTENCES.get(kind)
    return sentence(ctx) if sentence is not None else "is not valid"
