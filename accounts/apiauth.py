"""Authentication of the API by key: every request acts for its key's organization."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts.audit import Actor, set_actor
from accounts.models import ApiKey, Organization
from accounts.services import api_key_authenticate
from config.apikit import ApiError, bearer_token


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`: the request acts for the key's organization."""

    def __call__(self, request: HttpRequest) -> ApiKey:
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(
                401,
                "Missing API key: send the header 'Authorization: Bearer <key>'.",
                code="unauthenticated",
            )
        token = bearer_token(header)
        if token is None:
            raise ApiError(
                401,
                "Malformed Authorization header: expected 'Bearer <key>'.",
                code="unauthenticated",
            )
        api_key = self.authenticate(request, token)
        if api_key is None:
            raise ApiError(401, "Invalid or revoked API key.", code="invalid_api_key")
        set_actor(Actor.of_api_key(api_key))
        return api_key

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        return api_key_authenticate(raw_key=token)


def request_organization(request: HttpRequest) -> Organization:
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    return api_key.organization
