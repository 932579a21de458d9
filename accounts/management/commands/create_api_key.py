from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from accounts.management.commands._base import OperatorCommand
from accounts.selectors import organization_get_by_slug
from accounts.services import api_key_create


class Command(OperatorCommand):
    help = "Create an API key for an organization and print it, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The organization's slug.")
        parser.add_argument("--name", default="", help="A label to recognise the key by.")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = organization_get_by_slug(slug=options["slug"])
        api_key, raw_key = api_key_create(organization=organization, name=options["name"])
        self.stdout.write(
            f"Created API key {api_key.prefix}… for {organization.slug}. "
            "It is shown only this once; store it now:"
        )
        # Alone on the last line, so that scripts can take it with `tail -n 1`.
        self.stdout.write(raw_key)
