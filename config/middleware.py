from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config.apikit import bearer_token
from config.errors import error_response
from config.ratelimit import api_key_throttle

API_PREFIX = "/api/v1/"

_GENERIC_ERRORS = {
    400: ("bad_request", "The request is not valid."),
    403: ("forbidden", "Forbidden."),
    404: ("not_found", "No API endpoint at {path}."),
    405: ("method_not_allowed", "{method} is not allowed here. Allowed: {allowed}."),
    500: ("internal_error", "Internal error: it has been logged."),
}


class ApiErrorShapeMiddleware:
    """Give the API's error shape to error answers made outside the API's own
    handlers: an unknown path under /api/v1/ (Django's 404), a wrong method
    (Ninja's plain-text 405).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith(API_PREFIX)
            or response.get("Content-Type", "").split(";")[0] == "application/json"
        ):
            return response
        code, template = _GENERIC_ERRORS.get(response.status_code, ("error", "Request failed."))
        allowed = response.get("Allow", "")
        shaped = error_response(
            response.status_code,
            template.format(path=request.path, method=request.method, allowed=allowed),
            code=code,
        )
        if allowed:
            shaped["Allow"] = allowed
        return shaped


class ApiRateLimitMiddleware:
    """At most `API_RATE_LIMIT` requests per API key: beyond it, 429 with
    Retry-After. Counted on the key as sent, before it is looked up, so that
    guessing keys is throttled too and a throttled request costs no query.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX):
            token = bearer_token(request.headers.get("Authorization", ""))
            if token is not None:
                verdict = api_key_throttle(request, token=token)
                if verdict is not None and verdict.limited:
                    response = error_response(
                        429,
                        f"Too many requests for this API key: at most {verdict.limit} "
                        f"every {verdict.period} s. Retry in {verdict.retry_after} s.",
                        code="rate_limited",
                    )
                    response["Retry-After"] = str(verdict.retry_after)
                    return response
        return self.get_response(request)
