from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from accounts.management.commands._base import (
    OperatorCommand,
    anchor_day_argument,
    credits_argument,
)
from accounts.models import Organization
from accounts.plans import plan_by_key
from alerts.services.changes import organization_create
from config.credits import format_credits


class Command(OperatorCommand):
    help = "Create an organization."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="Unique short name: letters, numbers, - and _.")
        parser.add_argument("--name", required=True, help="Display name.")
        parser.add_argument(
            "--allowance",
            type=credits_argument,
            help="Credits per billing period, a decimal > 0. Left out: no allowance.",
        )
        parser.add_argument(
            "--anchor-day",
            type=anchor_day_argument,
            default=1,
            help="Day of the month (1-28) on which billing periods start, 00:00 UTC. Default 1.",
        )
        parser.add_argument(
            "--plan", help="The key of its plan (create_plan): its values apply where it sets none."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        organization = organization_create(
            slug=options["slug"],
            name=options["name"],
            credit_allowance=options["allowance"],
            anchor_day=options["anchor_day"],
            plan=plan_by_key(options["plan"]) if options["plan"] is not None else None,
        )
        self.stdout.write(describe_created(organization))


def describe_created(organization: Organization) -> str:
    allowance = (
        f"an allowance of {format_credits(organization.credit_allowance)} credits per period"
        if organization.credit_allowance is not None
        else "no allowance"
    )
    plan = f" on the plan {organization.plan.key}" if organization.plan else ""
    return (
        f"Created organization {organization.slug} ({organization.name}){plan} with {allowance}; "
        f"periods start on day {organization.anchor_day} of the month."
    )
