"""Validation errors read as sentences naming the field, never as pydantic's
own wording ("List should have at least 1 item after validation, not 0",
"Input should be a valid integer"); unknown paths anywhere under /api/ are a
JSON 404 in the error shape.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.services.configuration import alert_create
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

# Pydantic's phrasing, which must never reach a client.
PYDANTIC_WORDING = (
    "after validation",
    "Input should",
    "should have",
    "Field required",
    "Extra inputs",
    "Value error",
    "String should",
    "unable to parse",
)

USAGE_EVENT = {"idempotency_key": "k1", "credits": 1}


def usage(**event: Any) -> dict[str, Any]:
    return {"events": [{**USAGE_EVENT, **event}]}


SOURCES = "'assistant', 'agent', 'agent_external', 'workflow' or 'api'"

# (method, path, body, status, field, message)
CASES = [
    ("post", "/api/v1/usage", {"events": []}, 422, "events",
     "events: must hold at least 1 item (it holds 0)."),
    ("post", "/api/v1/usage", {"events": [USAGE_EVENT] * 1001}, 422, "events",
     "events: must hold at most 1,000 items (it holds 1,001)."),
    ("post", "/api/v1/usage", {}, 422, "events", "events: is required."),
    ("post", "/api/v1/usage", {"events": "all"}, 422, "events", "events: must be a list."),
    ("post", "/api/v1/usage", {"events": [{"credits": 1}]}, 422, "events[0].idempotency_key",
     "events[0].idempotency_key: is required."),
    ("post", "/api/v1/usage", usage(idempotency_key=""), 422, "events[0].idempotency_key",
     "events[0].idempotency_key: must not be empty."),
    ("post", "/api/v1/usage", usage(idempotency_key="k" * 256), 422, "events[0].idempotency_key",
     "events[0].idempotency_key: must be at most 255 characters long."),
    ("post", "/api/v1/usage", usage(idempotency_key=7), 422, "events[0].idempotency_key",
     "events[0].idempotency_key: must be a string."),
    ("post", "/api/v1/usage", usage(source="cli"), 422, "events[0].source",
     f"events[0].source: must be one of {SOURCES}."),
    ("post", "/api/v1/usage", usage(colour="red"), 422, "events[0].colour",
     "events[0].colour: is not a known field."),
    ("post", "/api/v1/usage", usage(timestamp="yesterday"), 422, "events[0].timestamp",
     "events[0].timestamp: must be a date and time in ISO 8601, e.g. 2026-01-31T09:30:00Z."),
    ("post", "/api/v1/usage", usage(properties=[1]), 422, "events[0].properties",
     "events[0].properties: must be a JSON object."),
    ("post", "/api/v1/usage", usage(credits=-1), 422, "events[0].credits",
     "events[0].credits: must not be negative."),
    ("post", "/api/v1/usage", usage(credits=0), 422, "events[0].credits",
     "events[0].credits: must be greater than 0."),
    ("post", "/api/v1/usage", {"events": [{"credits": 1}, {}]}, 422, "events[0].idempotency_key",
     "events[0].idempotency_key: is required (and 1 more error)."),
    ("patch", "/api/v1/organization", {"anchor_day": "x"}, 422, "anchor_day",
     "anchor_day: must be a whole number."),
    ("patch", "/api/v1/organization", {"anchor_day": 1.5}, 422, "anchor_day",
     "anchor_day: must be a whole number."),
    ("patch", "/api/v1/organization", {"block_when_exhausted": "yes"}, 422,
     "block_when_exhausted", "block_when_exhausted: must be true or false."),
    ("post", "/api/v1/members", {"email": "a@example.com", "role": "owner"}, 422, "role",
     "role: must be one of 'admin' or 'member'."),
    ("post", "/api/v1/consume", {"credits": 1, "idempotency_key": "c"}, 422, "user",
     "user: is required."),
    ("put", "/api/v1/user-alerts", {"enabled": "maybe"}, 422, "enabled",
     "enabled: must be true or false."),
    ("put", "/api/v1/user-alerts", {"admins": "all"}, 422, "admins", "admins: must be a list."),
    ("post", "/api/v1/alerts", {"threshold_type": "percent", "threshold": 50}, 422,
     "threshold_type",
     "threshold_type: must be one of 'percentage', 'absolute', 'spend', 'invoice_total' or "
     "'forecast'."),
    ("get", "/api/v1/alert-events?limit=many", None, 400, "limit",
     "limit: must be a whole number."),
    ("get", "/api/v1/alert-events?kind=mine", None, 400, "kind",
     "kind: must be one of 'organization_alert', 'user_alert', 'user_limit', "
     "'balance_depleted', 'balance_dropped' or 'balance_recovered'."),
    ("get", "/api/v1/alerts/abc", None, 400, "id", "id: must be a whole number."),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "field", "message"), CASES)
def test_each_error_reads_as_a_sentence(api, method, path, body, status, field, message):
    response = getattr(api, method)(path) if body is None else getattr(api, method)(path, body)
    error = assert_error(response, status, code="invalid", field=field)
    assert error["message"] == message


# Every operation that takes a body, with a body it accepts (or refuses for
# its values, not its shape) and the fields it knows.
BODIES = {
    ("post", "/api/v1/usage"): {"events": [dict(USAGE_EVENT)]},
    ("post", "/api/v1/consume"): {"user": "u1", "credits": 1, "idempotency_key": "c1"},
    ("post", "/api/v1/check"): {"user": "u1", "credits": 1},
    ("patch", "/api/v1/organization"): {"name": "Acme", "anchor_day": 1},
    ("post", "/api/v1/members"): {"email": "new@example.com", "name": "N", "role": "member"},
    ("post", "/api/v1/alerts"): {"threshold_type": "absolute", "threshold": 5, "admins": []},
    ("patch", "/api/v1/alerts/{alert}"): {"threshold": 6, "notify": "all_admins"},
    ("put", "/api/v1/user-alerts"): {"enabled": False, "threshold": 5, "notify_user": False},
    ("put", "/api/v1/user-limits"): {"enabled": False, "default_limit": 5, "admins": []},
    ("put", "/api/v1/user-limits/custom/u1"): {"limit": 5},
    ("post", "/api/v1/webhook-endpoints"): {
        "url": "https://example.com/hook",
        "events": ["alert.triggered"],
    },
}

WRONG_VALUES = [None, "", "x", "x" * 300, 0, -1, 1.5, 10**30, True, [], [1], {}, {"a": 1}]


def _assert_plain(error: dict[str, Any]) -> None:
    message = error["message"]
    for wording in PYDANTIC_WORDING:
        assert wording not in message, message
    assert message.endswith("."), message
    if error["code"] == "invalid" and error["field"] is not None:
        assert message.startswith(f"{error['field']}: "), message


@pytest.fixture
def alert_path(organization) -> dict[str, str]:
    alert = alert_create(organization=organization, threshold_type="absolute", threshold=5)
    return {"alert": str(alert.pk)}


def test_every_wrong_value_of_every_field_reads_as_a_sentence(api, alert_path):
    refused = 0
    for (method, path), body in BODIES.items():
        path = path.format(**alert_path)
        fields = set(body) | {"unknown_field"}
        for name in fields:
            for value in WRONG_VALUES:
                response = getattr(api, method)(path, {**body, name: value})
                if response.status_code in (400, 422):
                    refused += 1
                    _assert_plain(response.json()["error"])
                assert response.status_code < 500, response.content
            missing = {key: item for key, item in body.items() if key != name}
            response = getattr(api, method)(path, missing)
            if response.status_code in (400, 422):
                _assert_plain(response.json()["error"])
    assert refused > 200  # the sweep met validation, not only successes


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operation=st.sampled_from(sorted(BODIES)),
    changes=st.dictionaries(
        st.sampled_from(["events", "user", "credits", "threshold", "enabled", "admins", "url"]),
        JSON_VALUES,
        min_size=1,
        max_size=3,
    ),
)
def test_any_body_error_reads_as_a_sentence(api, alert_path, operation, changes):
    method, path = operation
    response = getattr(api, method)(path.format(**alert_path), {**BODIES[operation], **changes})
    assert response.status_code < 500, response.content
    if response.status_code in (400, 422):
        _assert_plain(response.json()["error"])


@pytest.mark.parametrize(
    "path", ["/api/", "/api", "/api/v2/usage", "/api/foo", "/api/v1/nothing", "/api/v1x/usage"]
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_paths_under_api_are_a_json_404(path, method):
    response = getattr(Client(), method)(path)
    error = assert_error(response, 404, code="not_found")
    assert response["Content-Type"] == "application/json"
    assert error["message"] == f"No API endpoint at {path}."


def test_paths_outside_api_keep_the_html_404():
    response = Client().get("/apiary/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
