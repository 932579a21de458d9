"""GET /api/v1/meters (SPEC §10): the meters of the platform, the same for
every organization. The usage summary's meter values are in billing/api.py.
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from billing.meter_selectors import MeterDefinition, meters_list
from config.credits import CreditsOut

router = Router()

AggregationName = Literal["sum", "count", "max", "unique_count"]


class MeterOut(Schema):
    key: str
    name: str
    unit: str
    aggregation: AggregationName
    property: str | None = Field(
        description="For unique_count: the event property whose distinct values are counted."
    )
    credits_per_unit: CreditsOut | None = Field(
        description="Credits an event of this meter costs per unit of quantity when it gives "
        "none; null: none."
    )


class MeterList(Schema):
    data: list[MeterOut]
    next_cursor: None = Field(description="Always null: the list is never split into pages.")


def meter_out(meter: MeterDefinition) -> dict[str, Any]:
    return {
        "key": meter.key,
        "name": meter.name,
        "unit": meter.unit,
        "aggregation": meter.aggregation,
        "property": meter.event_property,
        "credits_per_unit": meter.credits_per_unit,
    }


@router.get("/meters", response=MeterList, tags=["meters"])
def meter_list(request: HttpRequest) -> dict[str, Any]:
    """Every meter: `credits` (built in) first, then the platform's by key.
    Any organization's key (the API's auth) gets the same list."""
    return {"data": [meter_out(meter) for meter in meters_list()], "next_cursor": None}
