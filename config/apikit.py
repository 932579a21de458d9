"""The plumbing every API endpoint shares: the error shape, JSON parsing
with exact decimals, and cursor pagination. Authentication by API key is
accounts.apiauth: this module imports no app.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from django.db.models import Model, QuerySet
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.parser import Parser
from pydantic import BaseModel, ConfigDict, Field

from config.errors import InvalidInput, ServiceError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

M = TypeVar("M", bound=Model)


class ApiError(ServiceError):
    """An error answered with an explicit HTTP status."""

    def __init__(self, status: int, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)
        self.status = status


READ_ONLY = "readOnly"
# The description of every `PUT` operation.
ROUND_TRIP = (
    "Fields left out keep their value. Takes back the object the GET answers: "
    "fields marked readOnly may be sent equal to their value, and a different "
    "value is a 422 `read_only_field` naming the field."
)


def round_trip_put(router: Router, path: str, *, response: Any, tags: list[str]) -> Any:
    """Route a `PUT` that takes back the object its `GET` answers (ROUND_TRIP)."""
    return router.put(path, response=response, tags=tags, description=ROUND_TRIP)


def read_only(*, description: str) -> Any:
    """A field of a `PUT` body that its `GET` answers but that cannot be set:
    it may be sent back equal to its value, or left out. The document marks
    it `readOnly` (JSON Schema: changes are rejected by the server).
    """
    return Field(
        default=None,
        description=f"{description} Read-only: if sent, it must equal its current value.",
        json_schema_extra={READ_ONLY: True},
    )


class StrictSchema(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped.

    A plain pydantic model rather than ninja's `Schema`: bodies are JSON, never
    ORM objects, and `Schema`'s root validator, which reads attributes of
    model instances, validated every object twice when extra fields are
    forbidden; a 1,000-event batch spent a quarter of its time there.
    """

    model_config = ConfigDict(extra="forbid")

    # The fields declared with `read_only()`, found when the class is made.
    read_only_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.read_only_fields = tuple(
            name
            for name, field in cls.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(READ_ONLY)
        )

    def check_read_only(self, current: Mapping[str, Any]) -> None:
        """Round trips (SPEC §16): a `PUT` takes back the object its `GET`
        answered, read-only fields included, as long as they are unchanged.
        `current` holds each read-only field's value as the `GET` gives it;
        call this before writing anything, so that a refusal stores nothing.
        """
        for name in self.read_only_fields:
            if name not in self.model_fields_set:
                continue
            sent, value = getattr(self, name), current[name]
            if sent != value:
                raise InvalidInput(
                    f"{name}: is read-only: it is {value!r}, not {sent!r}. "
                    "Send it as the GET answers it, or leave it out.",
                    code="read_only_field",
                    field=name,
                )


class DecimalJsonParser(Parser):
    """Parse JSON numbers with a fraction as Decimal, so credits stay exact."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json.loads(request.body, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None if it is not one."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Page(Schema):
    """Query parameters of every list endpoint."""

    cursor: str | None = None
    limit: int = DEFAULT_PAGE_SIZE


def _encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400,
            "The cursor is not valid: pass back a next_cursor.",
            code="invalid_cursor",
            field="cursor",
        ) from None
    if value < 0:
        raise ApiError(
            400,
            "The cursor is not valid: pass back a next_cursor.",
            code="invalid_cursor",
            field="cursor",
        )
    return value


def paginate(
    queryset: QuerySet[M],
    page: Page,
    serialize: Callable[[list[M]], list[Any]],
    *,
    newest_first: bool = False,
) -> dict[str, Any]:
    """One page of `queryset` in the list shape, by keyset on the primary key.

    `serialize` turns the page's rows into items at once, so that it can fetch
    what they refer to in one query per page rather than one per row.
    """
    if not 1 <= page.limit <= MAX_PAGE_SIZE:
        raise ApiError(
            400,
            f"limit must be between 1 and {MAX_PAGE_SIZE}.",
            code="invalid_limit",
            field="limit",
        )
    ordered = queryset.order_by("-pk" if newest_first else "pk")
    if page.cursor:
        after = _decode_cursor(page.cursor)
        ordered = ordered.filter(pk__lt=after) if newest_first else ordered.filter(pk__gt=after)
    rows = list(ordered[: page.limit + 1])
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {
        "data": serialize(rows),
        "next_cursor": _encode_cursor(rows[-1].pk) if has_more else None,
    }


def not_null(value: Any) -> Any:
    """A `mode="before"` field validator for fields that may be left out of a
    PATCH or PUT but never set to null.
    """
    if value is None:
        raise ValueError("must not be null (leave the field out to keep it as it is)")
    return value
