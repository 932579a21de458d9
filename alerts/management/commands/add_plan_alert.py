from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.management.commands._base import OperatorCommand, credits_argument
from accounts.plans import plan_by_key
from alerts.services.plan_alerts import PLAN_ALERT_TYPES, plan_alert_create
from billing.meters import meters_by_key
from billing.models import CREDITS_METER


class Command(OperatorCommand):
    help = (
        "Add an alert to a plan: every organization on it has it at once, and where it is "
        "already passed it fires (unless --only-future)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", help="The plan's key (create_plan).")
        parser.add_argument("--type", required=True, choices=[str(t) for t in PLAN_ALERT_TYPES])
        parser.add_argument(
            "--threshold",
            required=True,
            type=credits_argument,
            help="A percent of the allowance (1-100), or credits (or the meter's unit).",
        )
        parser.add_argument(
            "--meter", help="A platform meter's key (create_meter); then --type absolute."
        )
        parser.add_argument(
            "--only-future",
            action="store_true",
            help="Organizations already past it this period are not told; those that cross "
            "it from now on are.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        plan = plan_by_key(options["key"])
        meter = None
        if options["meter"] not in (None, CREDITS_METER):
            meter = meters_by_key({options["meter"]}).get(options["meter"])
            if meter is None:
                raise CommandError(f"No meter {options['meter']!r}.")
        plan_alert = plan_alert_create(
            plan=plan,
            threshold_type=options["type"],
            threshold=options["threshold"],
            meter=meter,
            only_future=options["only_future"],
        )
        organizations = plan.organizations.count()
        self.stdout.write(
            f"Added {plan_alert} (id {plan_alert.pk}) to {organizations:,} "
            f"organization{'s' if organizations != 1 else ''} on the plan"
            + (", only for future crossings." if plan_alert.only_future else ".")
        )
