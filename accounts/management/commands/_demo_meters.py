"""seed_demo's meters (SPEC §10): two meters of the platform, Storage (the
largest quantity, in GB) and Meetings (a count), and a little usage of them
by the demo people this period. Without a price, so the meters' events cost
no credits and leave the demo's credit usage and limits as they are.

Like the rest of seed_demo, a rerun adds only what is missing: the meters by
key (one a staff member already made is kept as it is), the events by an
idempotency key that names the period.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from accounts.models import Organization
from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import Aggregation, Meter, UsageEvent
from billing.selectors import current_period
from billing.services.meters import meter_create


class DemoMeter(NamedTuple):
    key: str
    name: str
    unit: str
    aggregation: Aggregation


DEMO_METERS = (
    DemoMeter("storage_gb", "Storage", "GB", Aggregation.MAX),
    DemoMeter("meetings", "Meetings", "meetings", Aggregation.COUNT),
)


class DemoMeterUsage(NamedTuple):
    email: str
    meter: str
    # Storage: the GB each event reports (its largest counts); meetings: one event each.
    quantities: tuple[Decimal, ...]


DEMO_METER_USAGE = (
    DemoMeterUsage("priya@acme.test", "storage_gb", (Decimal("12.5"), Decimal("18.25"))),
    DemoMeterUsage("sam@acme.test", "storage_gb", (Decimal("6"), Decimal("9.75"))),
    DemoMeterUsage("jordan@acme.test", "storage_gb", (Decimal("31.5"),)),
    DemoMeterUsage("admin@acme.test", "meetings", (Decimal(1),) * 4),
    DemoMeterUsage("morgan@acme.test", "meetings", (Decimal(1),) * 3),
    DemoMeterUsage("taylor@acme.test", "meetings", (Decimal(1),) * 5),
)


def seed_meters() -> int:
    """Define the demo meters that no meter's key names yet; how many were."""
    existing = set(
        Meter.objects.filter(key__in=[meter.key for meter in DEMO_METERS]).values_list(
            "key", flat=True
        )
    )
    missing = [meter for meter in DEMO_METERS if meter.key not in existing]
    for meter in missing:
        meter_create(key=meter.key, name=meter.name, unit=meter.unit, aggregation=meter.aggregation)
    return len(missing)


def seed_meter_usage(organization: Organization, *, now: datetime) -> int:
    """Record the demo meters' usage of the current period that is not there
    yet, spread over the period so far; return how many events were added.
    A demo key that a staff member gave another aggregation gets none.
    """
    period = current_period(organization, now=now)
    external_ids = dict(organization.memberships.values_list("user__email", "external_id"))
    meters = dict(
        Meter.objects.filter(key__in=[meter.key for meter in DEMO_METERS]).values_list(
            "key", "aggregation"
        )
    )
    planned = [
        (f"demo-{period.start:%Y-%m-%d}-{usage.email}-{usage.meter}-{index}", usage, quantity)
        for usage in DEMO_METER_USAGE
        for index, quantity in enumerate(usage.quantities)
        if usage.email in external_ids
        and any(
            meter.key == usage.meter and meters.get(meter.key) == meter.aggregation
            for meter in DEMO_METERS
        )
    ]
    recorded = set(
        UsageEvent.objects.filter(
            organization=organization, idempotency_key__in=[key for key, _, _ in planned]
        ).values_list("idempotency_key", flat=True)
    )
    elapsed = now - period.start
    events = [
        UsageInput(
            idempotency_key=key,
            credits=None,  # no price: 0 credits
            user=external_ids[usage.email],
            meter=usage.meter,
            quantity=quantity,
            timestamp=period.start + elapsed * (index + 1) / (len(planned) + 1),
        )
        for index, (key, usage, quantity) in enumerate(planned)
        if key not in recorded
    ]
    if not events:
        return 0
    return usage_ingest(organization=organization, events=events).accepted
