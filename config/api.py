"""The HTTP API under /api/v1/: one NinjaAPI, its error shape, its routers."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.datastructures import MultiValueDict
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.api import router as accounts_router
from accounts.apiauth import ApiKeyAuth
from alerts.api import router as alerts_router
from alerts.credits_api import router as credits_router
from alerts.holds_api import router as holds_router
from alerts.invoices_api import router as invoices_router
from alerts.limit_requests_api import router as limit_requests_router
from billing.api import router as billing_router
from billing.meter_api import router as meters_router
from config.apikit import ApiError, DecimalJsonParser
from config.errors import ErrorOut, InvalidInput, ServiceError, error_response
from config.validation import validation_sentence

logger = logging.getLogger(__name__)

ERROR_SCHEMA_REF = "#/components/schemas/ErrorOut"

# The errors every operation may answer through the shared machinery, whatever
# it does itself: authentication and rate limiting (every operation with a
# key), reading its parameters and body, and finding the object its path
# names. Errors particular to one operation (409) are declared on it.
_ERROR_DESCRIPTIONS = {
    400: "Bad request: a query or path parameter is not valid, or the body is not JSON.",
    401: "Missing, malformed, unknown or revoked API key.",
    404: "No such object in this organization.",
    409: "Conflict with the current state.",
    413: "The body is larger than the server accepts (`request_too_large`).",
    422: "The body is not valid: `field` names the first input at fault.",
    429: "Too many requests for this API key: retry after `Retry-After` seconds.",
}


def _shared_error_codes(operation: dict[str, Any]) -> set[int]:
    codes: set[int] = set()
    if operation.get("security"):
        codes |= {401, 429}
    locations = {parameter.get("in") for parameter in operation.get("parameters", [])}
    if locations or "requestBody" in operation:
        codes.add(400)
    if "path" in locations:
        codes.add(404)
    if "requestBody" in operation:
        codes |= {413, 422}
    return codes


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds until the key may send requests again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def declare_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Declare, on every operation, the error answers the API really sends.

    Errors are made by the handlers below and by middleware, not by the
    operations' own return values, so Ninja cannot see them: without this the
    document would promise only success codes.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault("ErrorOut", error_schema)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status in _shared_error_codes(operation):
                responses.setdefault(status, _error_response(status))
            # Those an operation declares itself (409) get the same wording.
            for status, response in responses.items():
                if int(status) in _ERROR_DESCRIPTIONS:
                    response["description"] = _ERROR_DESCRIPTIONS[int(status)]
            operation["responses"] = dict(sorted(responses.items(), key=lambda item: int(item[0])))
    return document


def _storable(text: str) -> bool:
    """PostgreSQL holds no NUL character, and UTF-8 no lone surrogate (which a
    JSON `\\ud800` escape makes): text with either would be a server error.
    """
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_text_at(value: Any) -> str | None:
    """Where `value` holds text that cannot be stored (in a string or a key):
    the field ("" for the value itself), or None. Iterative, so that a body
    nested a thousand deep is answered too.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        field, item = stack.pop()
        if isinstance(item, str):
            if not _storable(item):
                return field
        elif isinstance(item, dict):
            if not all(_storable(str(key)) for key in item):
                return field
            stack.extend(
                (f"{field}.{key}" if field else str(key), child)
                for key, child in reversed(item.items())
            )
        elif isinstance(item, list):
            stack.extend(
                (f"{field}[{index}]", child) for index, child in reversed(list(enumerate(item)))
            )
    return None


def _may_hold_unstorable_text(body: bytes) -> bool:
    """Whether parsing `body` can have produced a NUL or a lone surrogate, so
    that the parsed value must be searched (a tenth of a 1,000-event batch's
    time): strict JSON refuses raw control characters, so in UTF-8 they come
    from a `\\u` escape, or from the bytes of a surrogate (0xED, which
    `json.loads` lets through); UTF-16 and UTF-32 bodies hold NUL bytes.
    """
    return b"\\u" in body or b"\xed" in body or b"\x00" in body


UNSTORABLE_TEXT = "must not contain NUL characters or unpaired surrogates."


class ApiParser(DecimalJsonParser):
    """Exact decimals, and only text the database can store: a NUL character
    or an unpaired surrogate, anywhere in a body or a query, is refused with
    the field it is in, rather than failing as a server error when saved.
    """

    def parse_body(self, request: HttpRequest) -> Any:
        data = super().parse_body(request)
        if not _may_hold_unstorable_text(request.body):
            return data
        field = _unstorable_text_at(data)
        if field is not None:
            # Ninja answers any parser error with a 400; `on_http_error` gives this one its own.
            raise InvalidInput(
                f"{field or 'The body'}: {UNSTORABLE_TEXT}", code="invalid", field=field or None
            )
        return data

    def parse_querydict(
        self, data: MultiValueDict[str, Any], list_fields: list[str], request: HttpRequest
    ) -> dict[str, Any]:
        parsed = super().parse_querydict(data, list_fields, request)
        field = _unstorable_text_at(parsed)
        if field is not None:
            raise ApiError(400, f"{field}: {UNSTORABLE_TEXT}", code="invalid", field=field)
        return parsed


class HeadroomApi(NinjaAPI):
    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> Any:
        document = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        declare_error_responses(document)
        return document


api = HeadroomApi(
    title="Headroom API",
    version="1",
    description=(
        "Credit usage limits and alerts. Authenticate with an organization API key: "
        "`Authorization: Bearer <key>`. Errors are "
        '`{"error": {"code", "message", "field"}}`.'
    ),
    auth=ApiKeyAuth(),
    parser=ApiParser(),
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)
api.add_router("", accounts_router)
api.add_router("", billing_router)
api.add_router("", alerts_router)
api.add_router("", credits_router)
api.add_router("", meters_router)
api.add_router("", invoices_router)
api.add_router("", limit_requests_router)
api.add_router("", holds_router)


def _field_of(location: tuple[Any, ...] | list[Any]) -> str | None:
    """('body', 'payload', 'events', 3, 'credits') -> 'events[3].credits'."""
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[2:] if parts[0] == "body" else parts[1:]
    field = ""
    for part in parts:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    return field or None


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    location = tuple(first.get("loc", ()))
    field = _field_of(location)
    message = validation_sentence(first)
    in_body = bool(location) and location[0] == "body"
    if in_body and field is None:
        message = (
            "The request body must be a JSON object."
            if request.body
            else "A JSON body is required."
        )
    else:
        message = f"{field}: {message}" if field else message[:1].upper() + message[1:]
        message = message if message.endswith(".") else f"{message}."
    if len(exc.errors) > 1:
        more = len(exc.errors) - 1
        message = f"{message[:-1]} (and {more} more error{'s' if more > 1 else ''})."
    return error_response(422 if in_body else 400, message, code="invalid", field=field)


@api.exception_handler(ServiceError)
def on_service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    return error_response(exc.status, exc.message, code=exc.code, field=exc.field)


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(401, "Invalid or missing API key.", code="unauthenticated")


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ServiceError):  # the parser said what is wrong
        return on_service_error(request, exc.__cause__)
    if exc.status_code == 400:
        return error_response(400, "The request body is not valid JSON.", code="invalid_json")
    return error_response(exc.status_code, str(exc), code="error")


@api.exception_handler(DataError)
def on_data_error(request: HttpRequest, exc: DataError) -> HttpResponse:
    """The database refused a value the request carried (SQLSTATE class 22: a
    NUL character in a path, a total past the largest number it stores).
    Validation should have refused it first: answer it as the request's fault,
    and log it so that the gap gets closed.
    """
    logger.warning(
        "Value refused by the database on %s %s", request.method, request.path, exc_info=True
    )
    return error_response(
        422 if request.body else 400,
        "A value in the request cannot be stored: it holds a NUL character or is out of range.",
        code="unstorable_value",
    )


@api.exception_handler(RequestDataTooBig)
def on_request_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    """A body Django found too large while reading it (ApiErrorShapeMiddleware
    refuses those whose Content-Length says so before they are read)."""
    return error_response(
        413,
        f"The request body is larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} "
        "bytes accepted.",
        code="request_too_large",
    )


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, "Not found.", code="not_found")


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("Unhandled API error on %s %s", request.method, request.path)
    return error_response(500, "Internal error: it has been logged.", code="internal_error")
