"""What every operator command shares: bad input ends in one line on stderr.

A bad command line exits 2 with `<prog>: error: <reason>` (argparse's usage
block is left out); a refused service call exits 1 with
`CommandError: <reason>`, printed by Django.
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from decimal import Decimal
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ANCHOR_DAY_MAX, ANCHOR_DAY_MIN
from config.credits import CreditsError, parse_credits
from config.errors import ServiceError


class OneLineErrorParser(CommandParser):
    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: error: {message}\n")
        # From call_command: Django's behaviour, an exception the caller can catch.
        raise CommandError(f"Error: {message}")


class OperatorCommand(BaseCommand):
    # System check warnings go to stderr and would break the one-line contract;
    # `manage.py check`, runserver and migrate still run them.
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds the parser and its shared options; only error reporting changes.
        parser.__class__ = OneLineErrorParser
        return parser

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except ServiceError as error:
            raise CommandError(error.message) from error
        except CreditsError as error:
            raise CommandError(f"Invalid credits: {error}.") from error


def credits_argument(raw: str) -> Decimal:
    """argparse `type=` for a positive credit amount, e.g. `10000` or `2.5`."""
    try:
        return parse_credits(raw)
    except CreditsError as error:
        raise ArgumentTypeError(f"{error} (got {raw!r})") from None


def price_argument(raw: str) -> Decimal:
    """argparse `type=` for a price per credit: a decimal >= 0, 6 fractional digits at most."""
    try:
        return parse_credits(raw, allow_zero=True)
    except CreditsError as error:
        raise ArgumentTypeError(f"{error} (got {raw!r})") from None


def anchor_day_argument(raw: str) -> int:
    """argparse `type=` for the day of the month on which billing periods start."""
    if raw.strip().isdecimal() and ANCHOR_DAY_MIN <= int(raw) <= ANCHOR_DAY_MAX:
        return int(raw)
    raise ArgumentTypeError(
        f"must be a day of the month from {ANCHOR_DAY_MIN} to {ANCHOR_DAY_MAX} (got {raw!r})"
    )


def non_empty_argument(raw: str) -> str:
    """argparse `type=` for a value that may be left out but not given empty."""
    if not raw.strip():
        raise ArgumentTypeError("must not be empty")
    return raw
