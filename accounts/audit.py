"""The audit trail: who changed what, and from what to what.

Services record changes with `audit_record`, inside their transaction. Who
acted comes from the request: the logged-in user (pages, the Django admin)
or the API key (the API), set by `AuditActorMiddleware` and the API's
authentication; anything else (commands, tasks) acts as "system".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

from accounts.models import ApiKey, AuditEvent, Organization, User

SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    label: str
    user: User | None = None
    api_key: ApiKey | None = None

    @classmethod
    def of_user(cls, user: User) -> Actor:
        return cls(label=user.email, user=user)

    @classmethod
    def of_api_key(cls, api_key: ApiKey) -> Actor:
        name = f" ({api_key.name})" if api_key.name else ""
        return cls(label=f"API key {api_key.prefix}…{name}", api_key=api_key)


# Resolved only when a change is recorded: most requests change nothing.
_current_actor: ContextVar[Callable[[], Actor | None]] = ContextVar(
    "audit_actor", default=lambda: None
)


def set_actor(actor: Actor) -> None:
    """Name who acts for the rest of this request (reset by the middleware)."""
    _current_actor.set(lambda: actor)


@contextmanager
def acting_as(actor: Actor | Callable[[], Actor | None] | None) -> Iterator[None]:
    token = _current_actor.set(actor if callable(actor) else lambda: actor)
    try:
        yield
    finally:
        _current_actor.reset(token)


def _request_user(request: HttpRequest) -> Actor | None:
    user = getattr(request, "user", None)
    return Actor.of_user(user) if isinstance(user, User) else None


def audit_record(
    *,
    organization: Organization,
    action: str,
    target_type: str,
    target_id: object = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """Record a change; nothing when it changed nothing."""
    if before is not None and before == after:
        return None
    actor = _current_actor.get()()
    return AuditEvent.objects.create(
        organization=organization,
        actor_user=actor.user if actor else None,
        actor_api_key=actor.api_key if actor else None,
        actor=actor.label if actor else SYSTEM,
        action=action,
        target_type=target_type,
        target_id=str(target_id or ""),
        before=before,
        after=after,
    )


class AuditActorMiddleware:
    """Each request starts with the logged-in user as the actor, if any; the
    API replaces it with its key once authenticated. Reset after the request.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting_as(lambda: _request_user(request)):
            return self.get_response(request)
