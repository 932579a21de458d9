from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from accounts.management.commands._base import OperatorCommand, credits_argument, price_argument
from accounts.plans import plan_create
from config.credits import format_credits


class Command(OperatorCommand):
    help = "Create a plan: what organizations on it use where they set none of their own."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", help="Unique short name: letters, numbers, - and _.")
        parser.add_argument("--name", required=True, help="Display name.")
        parser.add_argument(
            "--allowance", type=credits_argument, help="Credits per billing period, > 0."
        )
        parser.add_argument(
            "--default-limit",
            type=credits_argument,
            help="Default per-user limit, credits per member per period, > 0.",
        )
        parser.add_argument(
            "--credit-price", type=price_argument, help="Price of one credit, a decimal >= 0."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        plan = plan_create(
            key=options["key"],
            name=options["name"],
            credit_allowance=options["allowance"],
            default_limit=options["default_limit"],
            credit_price=options["credit_price"],
        )
        values = [
            f"{label} {format_credits(value)}"
            for label, value in (
                ("allowance", plan.credit_allowance),
                ("default limit", plan.default_limit),
                ("credit price", plan.credit_price),
            )
            if value is not None
        ]
        self.stdout.write(
            f"Created plan {plan.key} ({plan.name})"
            + (f": {', '.join(values)}." if values else " with no values of its own.")
        )
