"""The HTTP API under /api/v1/: one NinjaAPI, its error shape, its routers."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.api import router as accounts_router
from alerts.api import router as alerts_router
from billing.api import router as billing_router
from config.apikit import ApiKeyAuth, DecimalJsonParser
from config.errors import ServiceError, error_response

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="Headroom API",
    version="1",
    description=(
        "Credit usage limits and alerts. Authenticate with an organization API key: "
        "`Authorization: Bearer <key>`. Errors are "
        '`{"error": {"code", "message", "field"}}`.'
    ),
    auth=ApiKeyAuth(),
    parser=DecimalJsonParser(),
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)
api.add_router("", accounts_router)
api.add_router("", billing_router)
api.add_router("", alerts_router)


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


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "is not valid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if error.get("type") == "extra_forbidden":
        message = "is not a known field"
    return message


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    location = tuple(first.get("loc", ()))
    field = _field_of(location)
    message = _validation_message(first)
    in_body = bool(location) and location[0] == "body"
    if in_body and field is None:
        message = (
            "The request body must be a JSON object."
            if request.body
            else "A JSON body is required."
        )
    elif field:
        message = f"{field}: {message}"
    if len(exc.errors) > 1:
        message += f" (and {len(exc.errors) - 1} more error{'s' if len(exc.errors) > 2 else ''})"
    return error_response(422 if in_body else 400, message, code="invalid", field=field)


@api.exception_handler(ServiceError)
def on_service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    return error_response(exc.status, exc.message, code=exc.code, field=exc.field)


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(401, "Invalid or missing API key.", code="unauthenticated")


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:
        return error_response(400, "The request body is not valid JSON.", code="invalid_json")
    return error_response(exc.status_code, str(exc), code="error")


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, "Not found.", code="not_found")


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("Unhandled API error on %s %s", request.method, request.path)
    return error_response(500, "Internal error: it has been logged.", code="internal_error")
