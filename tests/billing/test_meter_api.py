"""The meters over the API (SPEC §10): GET /api/v1/meters, and the meter
values of GET /api/v1/usage/summary for the organization and each member,
read from the totals in a constant number of queries.
"""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Aggregation
from billing.selectors import current_period
from tests.factories import MembershipFactory, MeterFactory, meter_usage_row
from tests.fixtures import logged_in
from tests.helpers import ingest, post_usage

pytestmark = pytest.mark.django_db

CREDITS = {
    "key": "credits",
    "name": "Credits",
    "unit": "credits",
    "aggregation": "sum",
    "property": None,
    "credits_per_unit": None,
}


def test_meters_lists_credits_first_then_the_platforms_by_key(api):
    MeterFactory(key="storage_gb", name="Storage", unit="GB", aggregation="max")
    MeterFactory(
        key="active_users",
        name="Active users",
        unit="users",
        aggregation="unique_count",
        property="user_id",
        credits_per_unit=Decimal("0.000001"),
    )
    MeterFactory(key="meetings", name="Meetings", unit="meetings", aggregation="count")

    response = api.get("/api/v1/meters")

    assert response.status_code == 200
    assert response.json() == {
        "data": [
            CREDITS,
            {
                "key": "active_users",
                "name": "Active users",
                "unit": "users",
                "aggregation": "unique_count",
                "property": "user_id",
                "credits_per_unit": "0.000001",
            },
            {
                "key": "meetings",
                "name": "Meetings",
                "unit": "meetings",
                "aggregation": "count",
                "property": None,
                "credits_per_unit": None,
            },
            {
                "key": "storage_gb",
                "name": "Storage",
                "unit": "GB",
                "aggregation": "max",
                "property": None,
                "credits_per_unit": None,
            },
        ],
        "next_cursor": None,
    }


def test_meters_are_the_same_for_every_organization(api, outsider_api):
    MeterFactory(key="storage_gb")

    assert api.get("/api/v1/meters").json() == outsider_api.get("/api/v1/meters").json()
    assert len(api.get("/api/v1/meters").json()["data"]) == 2


def test_meters_need_an_api_key(client, db):
    response = client.get("/api/v1/meters")

    assert response.status_code == 401
    assert response.json()["error"]["code"]


@pytest.fixture
def meters():
    return {
        "storage": MeterFactory(key="storage_gb", unit="GB", aggregation=Aggregation.MAX),
        "meetings": MeterFactory(key="meetings", unit="meetings", aggregation=Aggregation.COUNT),
        "users": MeterFactory(
            key="active_users",
            unit="users",
            aggregation=Aggregation.UNIQUE_COUNT,
            property="user_id",
        ),
    }


def test_summary_gives_every_meter_for_the_organization_and_each_member(
    api, organization, owner, member, other_organization, meters
):
    period = current_period(organization)
    ingest(organization, "7.5", user=member)
    ingest(organization, 2, user=owner)
    storage, meetings = meters["storage"], meters["meetings"]
    meter_usage_row(storage, organization, "12.25", period_start=period.start)
    meter_usage_row(storage, organization, "12.25", period_start=period.start, membership=member)
    meter_usage_row(storage, organization, "3", period_start=period.start, membership=owner)
    meter_usage_row(meetings, organization, 4, period_start=period.start)
    meter_usage_row(meetings, organization, 4, period_start=period.start, membership=owner)
    # Neither another period's nor another organization's values count.
    earlier = current_period(organization, now=period.start - (period.end - period.start))
    meter_usage_row(meetings, organization, 99, period_start=earlier.start)
    meter_usage_row(storage, other_organization, 500, period_start=period.start)

    body = api.get("/api/v1/usage/summary").json()

    assert body["meters"] == [
        {"meter": "credits", "value": "9.5", "unit": "credits"},
        {"meter": "active_users", "value": "0", "unit": "users"},
        {"meter": "meetings", "value": "4", "unit": "meetings"},
        {"meter": "storage_gb", "value": "12.25", "unit": "GB"},
    ]
    assert [(user["user"], user["meters"]) for user in body["users"]] == [
        (
            member.external_id,
            [
                {"meter": "credits", "value": "7.5"},
                {"meter": "active_users", "value": "0"},
                {"meter": "meetings", "value": "0"},
                {"meter": "storage_gb", "value": "12.25"},
            ],
        ),
        (
            owner.external_id,
            [
                {"meter": "credits", "value": "2"},
                {"meter": "active_users", "value": "0"},
                {"meter": "meetings", "value": "4"},
                {"meter": "storage_gb", "value": "3"},
            ],
        ),
    ]


def test_a_member_with_meter_values_but_no_credits_is_listed_after_the_others(
    api, organization, member, meters
):
    period = current_period(organization)
    ingest(organization, 1, user=member)
    quiet = MembershipFactory(organization=organization, external_id="quiet")
    meter_usage_row(meters["users"], organization, 2, period_start=period.start, membership=quiet)

    users = api.get("/api/v1/usage/summary").json()["users"]

    assert [user["user"] for user in users] == [member.external_id, "quiet"]
    assert users[1] == {
        "user": "quiet",
        "used": "0",
        "counted": "0",
        "limit": None,
        "meters": [
            {"meter": "credits", "value": "0"},
            {"meter": "active_users", "value": "2"},
            {"meter": "meetings", "value": "0"},
            {"meter": "storage_gb", "value": "0"},
        ],
    }


def test_a_removed_members_values_stay_in_the_organizations_total_only(
    api, organization, member, meters
):
    period = current_period(organization)
    meter_usage_row(meters["meetings"], organization, 3, period_start=period.start)
    meter_usage_row(
        meters["meetings"], organization, 3, period_start=period.start, membership=member
    )
    member.delete()

    body = api.get("/api/v1/usage/summary").json()

    assert body["users"] == []
    assert {"meter": "meetings", "value": "3", "unit": "meetings"} in body["meters"]


def _summary_queries(api):
    api.get("/api/v1/usage/summary")  # the key's last use is written once a minute at most
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/v1/usage/summary").status_code == 200
    meter_queries = [q["sql"] for q in queries if '"billing_meter' in q["sql"]]
    return len(queries), meter_queries


def test_summary_reads_the_meters_in_two_queries_whatever_the_number_of_members(
    api, organization, meters
):
    period = current_period(organization)
    first = MembershipFactory(organization=organization)
    ingest(organization, 1, user=first)
    meter_usage_row(meters["storage"], organization, 1, period_start=period.start, membership=first)
    one_member, one_members_meter_queries = _summary_queries(api)

    for index in range(6):
        someone = MembershipFactory(organization=organization)
        if index % 2:
            ingest(organization, index + 1, user=someone)
        for meter in meters.values():
            meter_usage_row(
                meter, organization, index, period_start=period.start, membership=someone
            )
    MeterFactory(key="more")
    many_members, many_members_meter_queries = _summary_queries(api)

    assert len(api.get("/api/v1/usage/summary").json()["users"]) == 7
    assert many_members == one_member
    assert len(one_members_meter_queries) == len(many_members_meter_queries) == 2


def test_end_to_end_meters_defined_by_the_command_counted_by_ingest_and_read_back(
    api, owner, member
):
    """create_meter, then POST /api/v1/usage with quantities: the list, the
    summary and Monitor usage show what was counted."""
    for args in (
        ["storage_gb", "--name", "Storage", "--unit", "GB", "--aggregation", "max",
         "--credits-per-unit", "0.5"],
        ["meetings", "--name", "Meetings", "--unit", "meetings", "--aggregation", "count"],
        ["active_users", "--name", "Active users", "--unit", "users",
         "--aggregation", "unique_count", "--property", "user_id"],
    ):  # fmt: skip
        call_command("create_meter", *args, stdout=StringIO())
    post_usage(
        api,
        {"idempotency_key": "c1", "credits": "2.5", "user": member.external_id},
        {"idempotency_key": "s1", "meter": "storage_gb", "quantity": "10.25",
         "user": member.external_id},
        {"idempotency_key": "s2", "meter": "storage_gb", "quantity": 4, "user": owner.external_id},
        {"idempotency_key": "m1", "meter": "meetings", "user": owner.external_id, "credits": 0},
        {"idempotency_key": "m2", "meter": "meetings", "user": owner.external_id, "credits": 0},
        {"idempotency_key": "u1", "meter": "active_users", "properties": {"user_id": "a"}},
        {"idempotency_key": "u2", "meter": "active_users", "properties": {"user_id": "b"},
         "user": member.external_id},
        {"idempotency_key": "u3", "meter": "active_users", "properties": {"user_id": "a"},
         "user": member.external_id},
        status=202,
    )  # fmt: skip

    listed = [meter["key"] for meter in api.get("/api/v1/meters").json()["data"]]
    summary = api.get("/api/v1/usage/summary").json()

    assert listed == ["credits", "active_users", "meetings", "storage_gb"]
    # 2.5 credits, and storage at its price: 10.25 x 0.5 + 4 x 0.5.
    assert summary["used"] == "9.625"
    assert summary["meters"] == [
        {"meter": "credits", "value": "9.625", "unit": "credits"},
        {"meter": "active_users", "value": "2", "unit": "users"},
        {"meter": "meetings", "value": "2", "unit": "meetings"},
        {"meter": "storage_gb", "value": "10.25", "unit": "GB"},
    ]
    by_user = {user["user"]: user["meters"] for user in summary["users"]}
    assert by_user[member.external_id] == [
        {"meter": "credits", "value": "7.625"},
        {"meter": "active_users", "value": "2"},
        {"meter": "meetings", "value": "0"},
        {"meter": "storage_gb", "value": "10.25"},
    ]
    assert by_user[owner.external_id] == [
        {"meter": "credits", "value": "2"},
        {"meter": "active_users", "value": "0"},
        {"meter": "meetings", "value": "2"},
        {"meter": "storage_gb", "value": "4"},
    ]
    html = logged_in(owner).get("/usage/").content.decode()
    assert '<strong class="stat-value">10.25</strong> <span class="stat-none">GB</span>' in html
    assert '<strong class="stat-value">2</strong> <span class="stat-none">meetings</span>' in html
