"""Round trips (SPEC §16): every `PUT` accepts the object its `GET` answers.

The `PUT` operations are found in the OpenAPI document the API serves, so a
new one is covered without touching this file (and fails here if it has no
`GET`, or names a path parameter this file cannot fill). For each: the
`GET`'s body sent back unchanged is a 200 that changes nothing; each field
the document marks `readOnly` in the `PUT`'s body, sent with another value
(along with a writable field changed too), is a 422 naming that field, and
nothing is stored.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from django.test import Client

from accounts.models import AuditEvent, Membership, Organization
from alerts.models import UserAlertPolicy
from alerts.services.changes import custom_limit_set
from alerts.services.invoicing import BillingThresholdInput, billing_threshold_set
from billing.models import BillingThreshold, CustomLimit, UserLimitPolicy
from config.api import api as ninja_api
from tests.fixtures import ApiClient
from tests.helpers import limits_on, user_alerts_on

pytestmark = pytest.mark.django_db

D = Decimal
# Found at collection, from the document the application builds.
DOCUMENT = ninja_api.get_openapi_schema()
PUT_PATHS = sorted(path for path, operations in DOCUMENT["paths"].items() if "put" in operations)

# What each path parameter names in the world below.
PATH_VALUES = {"user": "member@acme.test"}
# A different value for a read-only field: another member for `user`, so that
# an endpoint that wrote to the member named in the body would be caught.
OTHER_VALUES = {"user": "owner@acme.test"}


@pytest.fixture
def world(organization: Organization, owner: Membership, member: Membership) -> None:
    """Every `PUT`'s object exists, with values other than the defaults."""
    user_alerts_on(organization, "10.5", admins=[owner], notify_user=True)
    limits_on(organization, 100, admins=[owner], excluded_sources=["workflow"])
    custom_limit_set(organization=organization, membership=member, limit=D(77))
    billing_threshold_set(
        organization=organization, settings=BillingThresholdInput(enabled=True, amount=D("12.5"))
    )


def stored() -> tuple[Any, ...]:
    """What the `PUT` operations could change, as stored."""
    return (
        list(
            UserAlertPolicy.objects.values_list("enabled", "threshold", "notify_user", "generation")
        ),
        sorted(UserAlertPolicy.admins.through.objects.values_list("membership_id", flat=True)),
        list(UserLimitPolicy.objects.values_list("enabled", "default_limit", "excluded_sources")),
        sorted(UserLimitPolicy.admins.through.objects.values_list("membership_id", flat=True)),
        sorted(CustomLimit.objects.values_list("membership__external_id", "limit")),
        list(BillingThreshold.objects.values_list("enabled", "amount")),
    )


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    return DOCUMENT["components"]["schemas"][name]


def read_only_fields(path: str) -> list[str]:
    """The fields the document marks `readOnly` in the body of `PUT path`."""
    body = DOCUMENT["paths"][path]["put"]["requestBody"]["content"]["application/json"]
    properties = _resolve(body["schema"]).get("properties", {})
    return [name for name, field in properties.items() if field.get("readOnly")]


def concrete(path: str) -> str:
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part[1:-1]
            assert name in PATH_VALUES, f"{path}: give its {{{name}}} a value in PATH_VALUES"
            part = PATH_VALUES[name]
        parts.append(part)
    return "/".join(parts)


def changed(name: str, value: Any) -> Any:
    """Another value for a read-only field."""
    if name in OTHER_VALUES:
        assert OTHER_VALUES[name] != value
        return OTHER_VALUES[name]
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    raise AssertionError(f"No other value for read-only field {name}={value!r}")


def with_a_writable_change(body: dict[str, Any], read_only: list[str]) -> dict[str, Any]:
    """`body` with one writable field changed (a flag flipped, an amount
    raised), so that a refused `PUT` that stored part of its body shows.
    """
    body = dict(body)
    for name, value in body.items():
        if name in read_only:
            continue
        if isinstance(value, bool):
            body[name] = not value
            return body
        if isinstance(value, str):
            try:
                body[name] = str(D(value) + 1)
            except InvalidOperation:
                continue
            return body
    return body


def test_the_document_has_the_specified_puts() -> None:
    assert {
        "/api/v1/user-alerts",
        "/api/v1/user-limits",
        "/api/v1/user-limits/custom/{user}",
    } <= set(PUT_PATHS)
    # The document a client reads is the one the operations are found in.
    served = Client().get("/api/v1/openapi.json").json()
    assert sorted(p for p, ops in served["paths"].items() if "put" in ops) == PUT_PATHS
    assert read_only_fields("/api/v1/user-limits/custom/{user}") == ["user"]


@pytest.mark.parametrize("path", PUT_PATHS)
def test_every_put_has_a_get(path: str) -> None:
    assert "get" in DOCUMENT["paths"][path], f"PUT {path} has no GET to round-trip with"


@pytest.mark.parametrize("path", PUT_PATHS)
def test_a_put_takes_back_what_its_get_answers(path: str, world: None, api: ApiClient) -> None:
    url = concrete(path)
    answered = api.get(url)
    assert answered.status_code == 200, answered.content
    before = stored()

    put = api.put(url, answered.json())

    assert put.status_code == 200, put.content
    assert put.json() == answered.json()
    assert api.get(url).json() == answered.json()
    assert stored() == before


@pytest.mark.parametrize(
    ("path", "field"),
    [(path, field) for path in PUT_PATHS for field in read_only_fields(path)],
)
def test_a_changed_read_only_field_is_refused_and_nothing_is_stored(
    path: str, field: str, world: None, api: ApiClient
) -> None:
    url = concrete(path)
    answered = api.get(url).json()
    body = with_a_writable_change(answered, read_only_fields(path))
    assert body != answered, "no writable field to change along with it"
    body[field] = changed(field, answered[field])
    before, audited = stored(), AuditEvent.objects.count()

    response = api.put(url, json.dumps(body))

    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["field"] == field
    assert error["code"] == "read_only_field"
    assert field in error["message"]
    assert api.get(url).json() == answered
    assert stored() == before
    assert AuditEvent.objects.count() == audited


def test_a_read_only_field_left_out_is_not_needed(world: None, api: ApiClient) -> None:
    response = api.put("/api/v1/user-limits/custom/member@acme.test", {"limit": "78"})

    assert response.status_code == 200, response.content
    assert response.json() == {"user": "member@acme.test", "limit": "78"}
