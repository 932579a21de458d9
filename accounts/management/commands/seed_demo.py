"""The demo organization `acme`: people to log in as and an API key.

Each step creates only what is missing, so the command can be run on every
start: a rerun changes nothing. New demo data is a new step in `handle`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from django.db import transaction

from accounts.management.commands._base import OperatorCommand
from accounts.models import ApiKey, Organization, Role
from accounts.services import api_key_create, membership_create, organization_create

DEMO_SLUG = "acme"
DEMO_NAME = "Acme Inc"
DEMO_ALLOWANCE = Decimal(10000)
DEMO_ANCHOR_DAY = 1
DEMO_PASSWORD = "headroom-demo"
DEMO_ADMIN_EMAIL = "admin@acme.test"
DEMO_API_KEY_NAME = "Demo key"


class DemoPerson(NamedTuple):
    email: str
    name: str
    role: Role


DEMO_PEOPLE = (
    DemoPerson(DEMO_ADMIN_EMAIL, "Alex Admin", Role.ADMIN),
    DemoPerson("morgan@acme.test", "Morgan Lee", Role.ADMIN),
    DemoPerson("priya@acme.test", "Priya Shah", Role.MEMBER),
    DemoPerson("sam@acme.test", "Sam Carter", Role.MEMBER),
    DemoPerson("jordan@acme.test", "Jordan Diaz", Role.MEMBER),
    DemoPerson("taylor@acme.test", "Taylor Kim", Role.MEMBER),
    DemoPerson("chen@acme.test", "Chen Wei", Role.MEMBER),
    DemoPerson("fatima@acme.test", "Fatima Noor", Role.MEMBER),
    DemoPerson("diego@acme.test", "Diego Alvarez", Role.MEMBER),
    DemoPerson("noah@acme.test", "Noah Fischer", Role.MEMBER),
)


class Command(OperatorCommand):
    help = "Create the demo organization 'acme' with admins, members and an API key (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            organization, organization_created = seed_organization()
            people_added = seed_people(organization)
            raw_api_key = seed_api_key(organization)

        self.stdout.write(
            f"Demo organization {organization.slug} ({organization.name}): "
            f"{'created' if organization_created else 'already there'}; "
            f"{people_added} of {len(DEMO_PEOPLE)} people added."
        )
        self.stdout.write(f"Admin login: {DEMO_ADMIN_EMAIL} / {DEMO_PASSWORD}")
        self.write_api_key(organization, raw_api_key)

    def write_api_key(self, organization: Organization, raw_api_key: str | None) -> None:
        if raw_api_key is not None:
            self.stdout.write(f"Demo API key (shown only this once): {raw_api_key}")
            return
        self.stdout.write(
            "Demo API key: created by an earlier run and not shown again; make another with "
            f"`python manage.py create_api_key {organization.slug}`."
        )


def seed_organization() -> tuple[Organization, bool]:
    organization = Organization.objects.filter(slug=DEMO_SLUG).first()
    if organization is not None:
        return organization, False
    organization = organization_create(
        slug=DEMO_SLUG,
        name=DEMO_NAME,
        credit_allowance=DEMO_ALLOWANCE,
        anchor_day=DEMO_ANCHOR_DAY,
    )
    return organization, True


def seed_people(organization: Organization) -> int:
    """Add the demo people who are not members yet; return how many were added."""
    members = set(organization.memberships.values_list("user__email", flat=True))
    missing = [person for person in DEMO_PEOPLE if person.email not in members]
    for person in missing:
        membership_create(
            organization=organization,
            email=person.email,
            role=person.role,
            name=person.name,
            password=DEMO_PASSWORD,
        )
    return len(missing)


def seed_api_key(organization: Organization) -> str | None:
    """The raw value of a new demo key, or None when an active one exists."""
    has_demo_key = ApiKey.objects.filter(
        organization=organization, name=DEMO_API_KEY_NAME, revoked_at__isnull=True
    ).exists()
    if has_demo_key:
        return None
    _, raw_key = api_key_create(organization=organization, name=DEMO_API_KEY_NAME)
    return raw_key
