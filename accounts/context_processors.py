from __future__ import annotations

from functools import partial
from typing import Any

from django.http import HttpRequest

from accounts.web import current_membership, user_memberships


def organization(request: HttpRequest) -> dict[str, Any]:
    """The current membership and all of the user's memberships, for the layout.

    Both are callables, which templates call on use: pages that never show
    them (the Django admin, the login page) make no query for them.
    """
    return {
        "current_membership": partial(current_membership, request),
        "user_memberships": partial(user_memberships, request),
    }
