from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from config.apikit import bearer_token
from config.errors import error_response
from config.ratelimit import api_key_throttle

API_PREFIX = "/api/v1/"
# Every path under /api/ answers in the API's error shape, whichever version
# it names (or none): a client of the API never gets an HTML page.
API_ROOT = "/api/"

_GENERIC_ERRORS = {
    400: ("bad_request", "The request is not valid."),
    403: ("forbidden", "Forbidden."),
    404: ("not_found", "No API endpoint at {path}."),
    405: ("method_not_allowed", "{method} is not allowed here. Allowed: {allowed}."),
    500: ("internal_error", "Internal error: it has been logged."),
}


def _is_api_path(path: str) -> bool:
    return path.startswith(API_ROOT) or path == API_ROOT.rstrip("/")


# The API's one page, read by a person in a browser: it keeps the pages' headers.
API_DOCS_PAGE = API_PREFIX + "docs"


def _is_json_api_path(path: str) -> bool:
    return _is_api_path(path) and not path.startswith(API_DOCS_PAGE)


class PageMiddleware:
    """The middleware only pages need — sessions, CSRF, the logged-in user,
    messages, the frame and content-security headers, htmx — for pages
    only: a request of the JSON API, authenticated by its key, pays for none
    of it. `settings.PAGE_MIDDLEWARE` lists them in order, and each runs for a
    page exactly as it would in `MIDDLEWARE`, hooks included (CSRF is checked
    in `process_view`): this is Django's own chain-building, for a sub-chain.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._view_hooks: list[Callable[..., Any]] = []
        self._template_hooks: list[Callable[..., Any]] = []
        self._exception_hooks: list[Callable[..., Any]] = []
        handler: Callable[[HttpRequest], HttpResponse] = get_response
        for path in reversed(settings.PAGE_MIDDLEWARE):
            middleware = import_string(path)(handler)
            if hasattr(middleware, "process_view"):
                self._view_hooks.insert(0, middleware.process_view)
            if hasattr(middleware, "process_template_response"):
                self._template_hooks.append(middleware.process_template_response)
            if hasattr(middleware, "process_exception"):
                self._exception_hooks.append(middleware.process_exception)
            handler = convert_exception_to_response(middleware)  # type: ignore[assignment]
        self.pages = handler

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _is_json_api_path(request.path):
            return self.get_response(request)
        return self.pages(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if _is_json_api_path(request.path):
            return None
        for hook in self._view_hooks:
            response = hook(request, view, args, kwargs)
            if response is not None:
                return response
        return None

    def process_template_response(self, request: HttpRequest, response: Any) -> Any:
        if not _is_json_api_path(request.path):
            for hook in self._template_hooks:
                response = hook(request, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if _is_json_api_path(request.path):
            return None
        for hook in self._exception_hooks:
            response = hook(request, exception)
            if response is not None:
                return response
        return None


def _body_refusal(request: HttpRequest) -> tuple[int, str, str] | None:
    """Why the body must not be read: (status, code, message), or None.

    Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE by raising
    RequestDataTooBig when a view reads it, which the API's catch-all
    answered as a 500 and pages as a 400. Deciding here, from
    Content-Length and before anything reads the body, gives the status
    HTTP has for it (413) whatever reads it, and reads nothing. No form of
    Headroom takes files, so the limit holds for multipart bodies too.
    """
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared:
        return None  # no body, or one Django will not read (WSGI reads Content-Length bytes)
    try:
        length = int(declared)
    except ValueError:
        length = -1
    if length < 0:
        return 400, "invalid_content_length", "The Content-Length header is not a byte count."
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        return (
            413,
            "request_too_large",
            f"The request body is {length:,} bytes: at most {limit:,} are accepted.",
        )
    return None


class ApiErrorShapeMiddleware:
    """Refuse a body too large (413) or a Content-Length that is not a number
    (400) before anything reads it, and give the API's error shape to error
    answers made outside the API's own handlers: an unknown path under /api/
    (Django's 404), a wrong method (Ninja's plain-text 405). Pages get those
    refusals as plain text.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refusal = _body_refusal(request)
        if refusal is not None:
            status, code, message = refusal
            if _is_api_path(request.path):
                return error_response(status, message, code=code)
            return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not _is_api_path(request.path)
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
