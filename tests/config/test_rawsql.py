"""config/rawsql.py: the hot path's hand-written reads give what the ORM gives."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Model

from accounts.models import ApiKey, Membership, Organization
from accounts.selectors import membership_get
from accounts.services import api_key_authenticate, api_key_create
from alerts.models import OrganizationAlert, UserAlertPolicy
from alerts.platform_models import PlatformAlert
from alerts.services.configuration import alert_create
from alerts.services.platform_config import platform_alert_save
from alerts.services.rules import _alert_configuration
from billing.models import CustomLimit, UserLimitPolicy
from billing.selectors import limit_rules_get
from config import rawsql
from tests.helpers import absolute_alert, user_alerts_on

pytestmark = pytest.mark.django_db


def fields(instance: Model) -> dict[str, object]:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


def test_instances_are_loaded_as_the_orm_loads_them(organization, owner, member):
    """Decimals, JSON, datetimes, booleans and nulls, through the fields' converters."""
    UserLimitPolicy.objects.create(
        organization=organization,
        enabled=True,
        default_limit=Decimal("12.5"),
        excluded_sources=["workflow"],
    )
    for model in (Organization, UserLimitPolicy, Membership):
        row = rawsql.fetch_all(
            f"SELECT {rawsql.columns(model, 't')} FROM {model._meta.db_table} t ORDER BY t.id", []
        )[0]
        loaded = rawsql.instance(model, row)
        expected = model.objects.order_by("id").first()
        assert fields(loaded) == fields(expected)
        assert not loaded._state.adding


def test_api_key_and_member_look_ups(organization, member):
    api_key, raw = api_key_create(organization=organization)
    found = api_key_authenticate(raw_key=raw)
    assert found is not None
    assert fields(found) | {"last_used_at": None} == fields(ApiKey.objects.get(pk=api_key.pk)) | {
        "last_used_at": None
    }
    assert fields(found.organization) == fields(organization)

    got = membership_get(organization=organization, external_id=member.external_id)
    assert fields(got) == fields(member)
    assert fields(got.user) == fields(member.user)


def test_limit_rules_with_custom_limits_unlimited_and_none(organization, owner, member):
    assert (
        limit_rules_get(organization=organization, membership_ids=[member.pk]).limit_for(member.pk)
        is None
    )  # no policy at all
    UserLimitPolicy.objects.create(
        organization=organization, enabled=True, default_limit=Decimal(10)
    )
    CustomLimit.objects.create(organization=organization, membership=member, limit=None)
    rules = limit_rules_get(organization=organization, membership_ids=[member.pk, owner.pk])
    assert rules.custom_limits == {member.pk: None}
    assert (rules.limit_for(member.pk), rules.limit_for(owner.pk)) == (None, Decimal(10))
    assert limit_rules_get(organization=organization, membership_ids=[]).custom_limits == {}


def test_alert_configuration(organization, owner):
    assert _alert_configuration(organization) == ([], None, [])
    absolute_alert(organization, 50)
    alert_create(organization=organization, threshold_type="percentage", threshold=Decimal(80))
    user_alerts_on(organization, 5, admins=[owner])

    platform = platform_alert_save(
        alert=PlatformAlert(name="All", threshold_type="absolute", threshold=7, emails=["s@x.io"])
    )
    alerts, policy, platform_alerts = _alert_configuration(organization)

    assert [fields(a) for a in alerts] == [
        fields(a) for a in OrganizationAlert.objects.filter(organization=organization)
    ]
    assert policy is not None
    assert fields(policy) == fields(UserAlertPolicy.objects.get(organization=organization))
    assert [fields(a) for a in platform_alerts] == [
        fields(PlatformAlert.objects.get(pk=platform.pk))
    ]
