"""Reads of meters (SPEC §10): their definitions and the totals the write path
keeps (MeterUsage per period, MeterDailyUsage per day), for the API, Monitor
usage, the CSV export and the admin. Never the raw events.

The meter `credits` is built in and is no row: `meters_list` puts it first,
described by `CREDITS_DEFINITION`, and its values are the credit totals
(billing/selectors.py) that the callers already read.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from accounts.models import Membership, Organization
from billing.models import (
    CREDITS_METER,
    DAILY_AGGREGATIONS,
    Aggregation,
    Meter,
    MeterDailyUsage,
    MeterUsage,
)
from billing.periods import Period
from billing.selectors import DayUsage, period_days

ZERO = Decimal(0)
ORGANIZATION_KEY = 0  # MeterUsage.member_key of the organization's own total


@dataclass(frozen=True)
class MeterDefinition:
    """A meter as the API and pages show it: the built-in one or a row."""

    key: str
    name: str
    unit: str
    aggregation: str
    event_property: str | None  # the API's `property`
    credits_per_unit: Decimal | None
    pk: int | None = None  # None for the built-in `credits`

    @property
    def is_built_in(self) -> bool:
        return self.pk is None

    @property
    def whole_numbers(self) -> bool:
        """count and unique_count count things: their values are whole."""
        return self.aggregation in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)

    @property
    def has_daily_values(self) -> bool:
        return self.aggregation in DAILY_AGGREGATIONS


CREDITS_DEFINITION = MeterDefinition(
    key=CREDITS_METER,
    name="Credits",
    unit="credits",
    aggregation=Aggregation.SUM,
    event_property=None,
    credits_per_unit=None,
)


def _definition(meter: Meter) -> MeterDefinition:
    return MeterDefinition(
        key=meter.key,
        name=meter.name,
        unit=meter.unit,
        aggregation=meter.aggregation,
        event_property=meter.property or None,
        credits_per_unit=meter.credits_per_unit,
        pk=meter.pk,
    )


def meters_list() -> list[MeterDefinition]:
    """Every meter, `credits` first, then the platform's by key. One query."""
    return [CREDITS_DEFINITION, *(_definition(meter) for meter in Meter.objects.order_by("key"))]


@dataclass(frozen=True)
class MeterTotals:
    """The period's values of every meter row in an organization: its own and
    each member's (by membership id), 0 where nothing was counted. The values
    of `credits` are not here: they are the credit totals.
    """

    organization: dict[int, Decimal]  # meter id -> value
    members: dict[int, dict[int, Decimal]]  # membership id -> meter id -> value
    memberships: dict[int, Membership]  # the members with a value, by id

    def organization_value(self, meter: MeterDefinition) -> Decimal:
        return self.organization.get(meter.pk or 0, ZERO)

    def member_value(self, membership_id: int, meter: MeterDefinition) -> Decimal:
        return self.members.get(membership_id, {}).get(meter.pk or 0, ZERO)

    def organization_values(
        self, meters: list[MeterDefinition], *, credits_used: Decimal
    ) -> list[tuple[MeterDefinition, Decimal]]:
        """Each meter's value for the organization, `credits` being `credits_used`."""
        return _values(self.organization, meters, credits_used)

    def member_values(
        self, membership_id: int, meters: list[MeterDefinition], *, credits_used: Decimal
    ) -> list[tuple[MeterDefinition, Decimal]]:
        """Each meter's value for one member, `credits` being `credits_used`."""
        return _values(self.members.get(membership_id, {}), meters, credits_used)

    def members_without(self, membership_ids: set[int]) -> list[Membership]:
        """The members with a meter value but not among `membership_ids` (those
        with credit usage), by external id.
        """
        return sorted(
            (m for pk, m in self.memberships.items() if pk not in membership_ids),
            key=lambda membership: membership.external_id,
        )


def _values(
    by_meter_id: dict[int, Decimal], meters: list[MeterDefinition], credits_used: Decimal
) -> list[tuple[MeterDefinition, Decimal]]:
    return [
        (meter, credits_used if meter.pk is None else by_meter_id.get(meter.pk, ZERO))
        for meter in meters
    ]


def meter_totals_get(
    *,
    organization: Organization,
    period: Period,
    with_members: bool = True,
    with_users: bool = False,
) -> MeterTotals:
    """This period's meter totals of the organization and (`with_members`)
    its members: one query, whatever the number of members and meters. Rows
    of a removed member (their membership gone) count in the organization's
    total only. `with_users` fetches each member's user too (for their email).
    """
    rows = MeterUsage.objects.filter(organization=organization, period_start=period.start)
    if with_members:
        rows = rows.select_related("membership__user" if with_users else "membership")
    else:
        rows = rows.filter(member_key=ORGANIZATION_KEY)
    totals: dict[int, Decimal] = {}
    members: dict[int, dict[int, Decimal]] = defaultdict(dict)
    memberships: dict[int, Membership] = {}
    for row in rows:
        if row.member_key == ORGANIZATION_KEY:
            totals[row.meter_id] = row.value
        elif row.membership is not None:
            members[row.member_key][row.meter_id] = row.value
            memberships[row.member_key] = row.membership
    return MeterTotals(organization=totals, members=dict(members), memberships=memberships)


def meter_daily_values(
    *, organization: Organization, period: Period, meters: list[MeterDefinition], until: date
) -> dict[int, list[DayUsage]]:
    """For each meter with daily values (sum, count, max), its value on each
    day of the period up to `until`, 0 on a day without usage. One query.
    """
    charted = [meter.pk for meter in meters if meter.pk is not None and meter.has_daily_values]
    days = [day for day in period_days(period) if day <= until]
    if not charted or not days:
        return {pk: [] for pk in charted}
    values: dict[int, dict[date, Decimal]] = defaultdict(dict)
    for meter_id, day, value in MeterDailyUsage.objects.filter(
        organization=organization, meter_id__in=charted, day__gte=days[0], day__lte=days[-1]
    ).values_list("meter_id", "day", "value"):
        values[meter_id][day] = value
    return {
        pk: [DayUsage(day=day, used=values[pk].get(day, ZERO)) for day in days] for pk in charted
    }


def meter_uses(meter: Meter) -> list[str]:
    """What refers to the meter and keeps it (on_delete=PROTECT): its totals
    and any alert on it, named as their models are. One query each; the apps
    above billing (alerts) are found through the model's relations, not imported.
    """
    uses = []
    for relation in Meter._meta.get_fields(include_hidden=True):
        if not (relation.auto_created and not relation.concrete and relation.one_to_many):
            continue
        related = relation.related_model
        field = relation.field.name  # type: ignore[union-attr]
        if related._default_manager.filter(**{field: meter}).exists():  # type: ignore[union-attr]
            uses.append(str(related._meta.verbose_name_plural))  # type: ignore[union-attr]
    return sorted(uses)
