from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from accounts.management.commands._base import OperatorCommand, non_empty_argument
from accounts.models import Membership, Role
from accounts.selectors import organization_get_by_slug
from accounts.services import membership_create


class Command(OperatorCommand):
    help = "Add a person to an organization, creating their user if the email is new."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The organization's slug.")
        parser.add_argument("email", help="The person's email; their login.")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument(
            "--name", default="", help="Their name in this organization (a new user's own too)."
        )
        parser.add_argument(
            "--password",
            type=non_empty_argument,
            help="Login password; for an existing user, replaces theirs.",
        )
        parser.add_argument(
            "--external-id",
            type=non_empty_argument,
            help="How the host application names this user over the API. Default: the email.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        organization = organization_get_by_slug(slug=options["slug"])
        membership = membership_create(
            organization=organization,
            email=options["email"],
            role=options["role"],
            name=options["name"],
            password=options["password"],
            external_id=options["external_id"],
        )
        self.stdout.write(describe_added(membership))


def describe_added(membership: Membership) -> str:
    login = "" if membership.user.has_usable_password() else " They have no password yet."
    return (
        f"Added {membership.user.email} to {membership.organization.slug} as {membership.role} "
        f"(user id {membership.external_id!r}).{login}"
    )
