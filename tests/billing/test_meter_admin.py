"""The Django admin of meters (SPEC §10): created through the service, the
key, aggregation and property fixed once created, a meter in use kept.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.meter_admin import MeterAdmin
from billing.models import Aggregation, Meter
from billing.selectors import current_period
from tests.factories import MeterFactory, meter_usage_row
from tests.helpers import admin_url

ADD = {
    "key": "storage_gb",
    "name": "Storage",
    "unit": "GB",
    "aggregation": "max",
    "property": "",
    "credits_per_unit": "0.25",
}


def test_the_list_explains_the_built_in_meter_and_lists_the_others(staff_client):
    MeterFactory(key="meetings", name="Meetings", unit="meetings", aggregation="count")
    MeterFactory(key="active_users", aggregation="unique_count", property="user_id")

    html = staff_client.get(admin_url(Meter, "changelist")).content.decode()

    assert "The meter <strong>credits</strong> (Credits, in credits, sum) is built in" in html
    assert html.index("active_users") < html.index("meetings")
    assert "user_id" in html  # the property column
    for column in ("Key", "Name", "Unit", "Aggregation", "Property", "Credits per unit"):
        assert f">{column}</a>" in html


def test_staff_create_a_meter(staff_client):
    response = staff_client.post(admin_url(Meter, "add"), ADD)

    assert response.status_code == 302, response.content.decode()[:3000]
    meter = Meter.objects.get()
    assert (meter.key, meter.name, meter.unit, meter.aggregation) == (
        "storage_gb",
        "Storage",
        "GB",
        "max",
    )
    assert meter.credits_per_unit == Decimal("0.25")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"key": "credits"}, "key", "names the built-in meter"),
        ({"key": "has space"}, "key", "valid"),
        ({"property": "user_id"}, "property", "only a unique_count meter has a property"),
        ({"aggregation": "unique_count"}, "property", "needs the event property"),
        ({"credits_per_unit": "-1"}, "credits_per_unit", "must not be negative"),
        ({"name": "   "}, "name", "required"),
    ],
)
def test_bad_input_is_shown_on_its_field_and_nothing_is_stored(
    staff_client, changes, field, message
):
    response = staff_client.post(admin_url(Meter, "add"), {**ADD, **changes})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert not Meter.objects.exists()


def test_a_key_taken_is_refused(staff_client):
    MeterFactory(key="storage_gb")

    response = staff_client.post(admin_url(Meter, "add"), ADD)

    assert response.status_code == 200
    assert "key" in response.context["adminform"].form.errors
    assert Meter.objects.count() == 1


def test_key_aggregation_and_property_are_read_only_once_created(staff_client):
    meter = MeterFactory(key="active_users", aggregation="unique_count", property="user_id")
    url = admin_url(Meter, "change", meter.pk)

    html = staff_client.get(url).content.decode()
    for fixed in ("key", "aggregation", "property"):
        assert f'name="{fixed}"' not in html
    assert 'name="name"' in html

    response = staff_client.post(
        url,
        {
            "key": "other",
            "aggregation": "sum",
            "property": "",
            "name": "Active users",
            "unit": "users",
            "credits_per_unit": "1",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    meter.refresh_from_db()
    assert (meter.key, meter.aggregation, meter.property) == (
        "active_users",
        "unique_count",
        "user_id",
    )
    assert (meter.name, meter.unit, meter.credits_per_unit) == ("Active users", "users", 1)


def test_a_change_is_checked_by_the_service(staff_client):
    meter = MeterFactory(key="storage", name="Storage")

    response = staff_client.post(
        admin_url(Meter, "change", meter.pk), {"name": "Storage", "unit": "\x07"}
    )

    assert response.status_code == 200
    assert "unit" in response.context["adminform"].form.errors
    meter.refresh_from_db()
    assert meter.unit == "units"


@pytest.fixture
def used_meter(organization):
    meter = MeterFactory(key="storage", name="Storage", aggregation=Aggregation.MAX)
    meter_usage_row(meter, organization, 3, period_start=current_period(organization).start)
    return meter


def test_deleting_a_meter_with_usage_is_refused_with_the_reason(staff_client, used_meter):
    url = admin_url(Meter, "delete", used_meter.pk)

    page = staff_client.get(url)
    posted = staff_client.post(url, {"post": "yes"})

    html = page.content.decode()
    assert "Cannot delete meter" in html
    assert "Storage (storage) is kept by its meter usage" in html
    assert "cannot be deleted (rename it instead)" in html
    assert posted.status_code == 200
    assert "Cannot delete meter" in posted.content.decode()
    assert Meter.objects.filter(pk=used_meter.pk).exists()


def test_deleting_meters_with_usage_from_the_list_is_refused(staff_client, used_meter):
    unused = MeterFactory(key="meetings")

    response = staff_client.post(
        admin_url(Meter, "changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [used_meter.pk, unused.pk],
            "post": "yes",
        },
    )

    assert "Storage (storage) is kept by its meter usage" in response.content.decode()
    assert Meter.objects.count() == 2


def test_a_meter_without_usage_can_be_deleted(staff_client, used_meter):
    unused = MeterFactory(key="meetings")

    response = staff_client.post(admin_url(Meter, "delete", unused.pk), {"post": "yes"})

    assert response.status_code == 302
    assert list(Meter.objects.values_list("key", flat=True)) == ["storage"]


def test_usage_counted_while_the_delete_page_was_open_keeps_the_meter(
    staff_client, organization, monkeypatch
):
    meter = MeterFactory(key="meetings", name="Meetings")
    # The page's check saw no usage; the usage comes before the delete itself.
    monkeypatch.setattr(
        MeterAdmin, "get_deleted_objects", lambda self, objs, request: ([], {}, set(), [])
    )
    meter_usage_row(meter, organization, 1, period_start=current_period(organization).start)

    response = staff_client.post(admin_url(Meter, "delete", meter.pk), {"post": "yes"}, follow=True)

    html = response.content.decode()
    assert "Not deleted: the meter has counted usage since" in html
    assert "deleted successfully" not in html
    assert Meter.objects.filter(pk=meter.pk).exists()
