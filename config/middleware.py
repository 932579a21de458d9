from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config.errors import error_response

API_PREFIX = "/api/v1/"


class ApiErrorShapeMiddleware:
    """Give the API's error shape to answers that Django or Ninja make outside
    our handlers: a wrong method (405) on an API path.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code == 405
            and request.path.startswith(API_PREFIX)
            and response.get("Content-Type", "").split(";")[0] != "application/json"
        ):
            allowed = response.get("Allow", "")
            shaped = error_response(
                405,
                f"{request.method} is not allowed here. Allowed: {allowed}.",
                code="method_not_allowed",
            )
            shaped["Allow"] = allowed
            return shaped
        return response
