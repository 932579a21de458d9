from __future__ import annotations

from argparse import ArgumentTypeError
from decimal import Decimal
from typing import Any

from django.core.management.base import CommandParser

from accounts.management.commands._base import OperatorCommand, non_empty_argument
from billing.models import Aggregation, Meter
from billing.services.meters import meter_create
from config.credits import CreditsError, format_credits, parse_credits


def credits_per_unit_argument(raw: str) -> Decimal:
    """argparse `type=` for a price in credits that may be 0, e.g. `0.25`."""
    try:
        return parse_credits(raw, allow_zero=True)
    except CreditsError as error:
        raise ArgumentTypeError(f"{error} (got {raw!r})") from None


class Command(OperatorCommand):
    help = "Define a meter for every organization (SPEC §10)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "key", help="What usage events name: letters, numbers, - and _. Not `credits`."
        )
        parser.add_argument("--name", required=True, type=non_empty_argument, help="Display name.")
        parser.add_argument(
            "--unit", required=True, type=non_empty_argument, help="Unit of its value, e.g. GB."
        )
        parser.add_argument(
            "--aggregation",
            required=True,
            choices=Aggregation.values,
            help="sum or max of the events' quantity, count of events, or unique_count of "
            "the distinct values of --property.",
        )
        parser.add_argument(
            "--property",
            type=non_empty_argument,
            help="For unique_count only (and then required): the event property counted.",
        )
        parser.add_argument(
            "--credits-per-unit",
            type=credits_per_unit_argument,
            help="Credits per unit of quantity for events that give no credits, a decimal "
            ">= 0. Left out: none.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        meter = meter_create(
            key=options["key"],
            name=options["name"],
            unit=options["unit"],
            aggregation=options["aggregation"],
            property=options["property"] or "",
            credits_per_unit=options["credits_per_unit"],
        )
        self.stdout.write(describe_created(meter))


def describe_created(meter: Meter) -> str:
    counts = {
        Aggregation.SUM: "the sum of the events' quantities",
        Aggregation.COUNT: "the number of events",
        Aggregation.MAX: "the largest quantity of an event",
        Aggregation.UNIQUE_COUNT: f"the distinct values of the property {meter.property!r}",
    }[Aggregation(meter.aggregation)]
    price = (
        "no price"
        if meter.credits_per_unit is None
        else f"{format_credits(meter.credits_per_unit)} credits per {meter.unit}"
    )
    return (
        f"Created meter {meter.key} ({meter.name}, in {meter.unit}): {counts} per period; {price}."
    )
