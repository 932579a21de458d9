"""Errors that services raise for callers to show: the API, forms and the CLI.

Each carries a stable machine `code`, a human `message` and, where one input
is at fault, the `field`. The API turns them into its error shape with the
class's HTTP status; commands print the message.
"""

from __future__ import annotations

from django.http import JsonResponse
from ninja import Schema


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field


class InvalidInput(ServiceError):
    status = 422


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class ErrorDetail(Schema):
    code: str
    message: str
    field: str | None


class ErrorOut(Schema):
    """Every error answer: a stable machine `code`, a human `message`, and the
    `field` at fault where there is one."""

    error: ErrorDetail


def error_response(
    status: int, message: str, *, code: str, field: str | None = None
) -> JsonResponse:
    """The API's one error shape."""
    return JsonResponse(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )
