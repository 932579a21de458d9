"""Hostile input: every operation of /api/v1/openapi.json, fuzzed by schemathesis.

The document is loaded, at collection, from the application itself (Django's
WSGI handler, in-process). Every operation gets schemathesis's coverage
phase (boundary values, invalid values, missing auth, wrong methods) and
MAX_EXAMPLES fuzzed examples, valid and invalid, sent with a real API key
against an organization with members, limits, alerts, firings and a webhook
endpoint; hooks make half the requests name objects and members that exist,
so that they also get past validation into the services. Each request runs
in a savepoint rolled back afterwards: every example starts from the same
organization.

Checks: no response is a 5xx, and every response conforms to the document
(its status code is declared, its content type and its body match). Where
the API sends something the document does not declare, the document is
what gets fixed (config/api.py), not the checks.

The figures (operations, examples, server errors) are written to
test-artifacts/schemathesis.json and printed at the end of the run.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Membership, Organization
from accounts.services import api_key_create
from alerts.models import Notification, WebhookEndpoint
from alerts.services.changes import custom_limit_set
from alerts.services.configuration import alert_create, user_alert_policy_update
from alerts.services.consume import usage_consume
from alerts.services.credit_settings import AutoTopUpInput, auto_top_up_set, balance_alert_create
from alerts.services.credits import credit_grant_create
from alerts.services.holds import hold_create, hold_settle
from alerts.services.ingest import UsageInput, usage_ingest
from alerts.services.invoicing import BillingThresholdInput, billing_threshold_set
from billing.models import Invoice, UsageEvent
from billing.selectors import current_period
from billing.services.grants import GrantInput
from tests.factories import (
    AdminMembershipFactory,
    MembershipFactory,
    MeterFactory,
    OrganizationFactory,
    meter_usage_row,
)
from tests.helpers import absolute_alert, limits_on, user_alerts_on

# Schemathesis's generated test hides its fixtures from pytest-django: the
# mark is what tells it to set up the test database.
pytestmark = pytest.mark.django_db

# Fuzzed examples per operation; raise it for a deeper run on a workstation.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"))
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "schemathesis.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Tally:
    """What the run tried, for the figures reported at the end."""

    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    # Cases of schemathesis's coverage phase that send a method the path does not have.
    wrong_method: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0

    def record(self, case: Any, status: int) -> None:
        if status >= 500:
            self.server_errors += 1
        if case.method.upper() != case.operation.method.upper():
            self.wrong_method[status] += 1
            return
        self.by_operation.setdefault(case.operation.label, Counter())[status] += 1

    def as_dict(self, operations_in_document: int) -> dict[str, Any]:
        statuses: Counter[int] = sum(self.by_operation.values(), Counter())
        return {
            "operations_in_document": operations_in_document,
            "operations_tested": len(self.by_operation),
            "examples": sum(statuses.values()),
            "wrong_method_probes": sum(self.wrong_method.values()),
            "server_errors": self.server_errors,
            "max_examples_per_operation": MAX_EXAMPLES,
            "responses_by_status": _by_status(statuses + self.wrong_method),
            "operations": {
                label: _by_status(counts) for label, counts in sorted(self.by_operation.items())
            },
        }


def _by_status(counts: Counter[int]) -> dict[str, int]:
    return {str(status): count for status, count in sorted(counts.items())}


TALLY = Tally()


@dataclass
class World:
    """The organization every request acts on, and the objects it can name."""

    organization: Organization
    key: str
    users: list[str]
    alert_ids: list[int]
    webhook_endpoint_ids: list[int]
    grant_ids: list[int]
    balance_alert_ids: list[int]


# The objects of the organization set up for the current test, for path parameters.
KNOWN: dict[str, list[Any]] = {
    "user": [],
    "alert": [],
    "webhook": [],
    "grant": [],
    "balance_alert": [],
    "invoice": [],
    "hold": [],
}


# Loaded at collection, as a client would: from the document the application serves.
# Schemathesis's WSGI client names the host "localhost".
APP = WSGIHandler()
with override_settings(ALLOWED_HOSTS=["localhost"]):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time, name an object that exists in the organization."""
    # The operation's path as the document has it: "/api/v1/alerts/{id}".
    path = (context.operation.path if context.operation else "").removeprefix("/api/v1")
    if "{user}" in path and KNOWN["user"]:
        real = st.sampled_from(KNOWN["user"]).map(lambda user: {"user": user})
    elif path.startswith("/alerts/") and KNOWN["alert"]:
        real = st.sampled_from(KNOWN["alert"]).map(lambda pk: {"id": pk})
    elif path.startswith("/webhook-endpoints/") and KNOWN["webhook"]:
        real = st.sampled_from(KNOWN["webhook"]).map(lambda pk: {"id": pk})
    elif path.startswith("/credit-grants/") and KNOWN["grant"]:
        real = st.sampled_from(KNOWN["grant"]).map(lambda pk: {"id": pk})
    elif path.startswith("/balance-alerts/") and KNOWN["balance_alert"]:
        real = st.sampled_from(KNOWN["balance_alert"]).map(lambda pk: {"id": pk})
    elif path.startswith("/invoices/") and KNOWN["invoice"]:
        real = st.sampled_from(KNOWN["invoice"]).map(lambda pk: {"id": pk})
    elif path.startswith("/holds/") and KNOWN["hold"]:
        real = st.sampled_from(KNOWN["hold"]).map(lambda pk: {"id": pk})
    else:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), real)


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """Half the time, make the body plausible where random data almost never
    is (members who exist, amounts in range, an email, a URL), so that
    requests also get past validation into the services.
    """
    if not isinstance(body, dict) or not KNOWN["user"]:
        return st.just(body)
    return st.one_of(st.just(body), _plausible(body))


CREDIT_FIELDS = ("credits", "threshold", "limit", "default_limit", "credit_allowance", "amount")
credit_amounts = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal(150), places=6, allow_nan=False
).map(str)


@st.composite
def _plausible(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    users = st.sampled_from(KNOWN["user"])
    body = copy.deepcopy(body)
    events = body.get("events")
    items = (
        [body, *(e for e in events if isinstance(e, dict))] if isinstance(events, list) else [body]
    )
    for item in items:
        if isinstance(item.get("user"), str):
            item["user"] = draw(users)
        if isinstance(item.get("admins"), list):
            item["admins"] = draw(st.lists(users, max_size=3))
        for name in CREDIT_FIELDS:
            if item.get(name) is not None:
                item[name] = draw(credit_amounts)
        if isinstance(item.get("email"), str):
            item["email"] = draw(st.from_regex(r"[a-z]{1,12}@fuzzed\.test", fullmatch=True))
        if isinstance(item.get("url"), str):
            item["url"] = draw(
                st.from_regex(r"https://[a-z]{1,12}\.example\.com/[a-z]*", fullmatch=True)
            )
    return body


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not TALLY.by_operation:  # the fuzzing did not run (deselected)
        return
    operations = sum(1 for result in schema.get_all_operations() if result.ok())
    figures = TALLY.as_dict(operations)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2) + "\n")
    line = (
        f"schemathesis: {figures['operations_tested']}/{operations} operations, "
        f"{figures['examples']} examples (+{figures['wrong_method_probes']} wrong-method "
        f"probes), {figures['server_errors']} server errors; "
        f"statuses {figures['responses_by_status']}; {ARTIFACT}"
    )
    # Teardown output is captured: write past the capture, onto the terminal.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


@pytest.fixture
def world(db: None) -> World:
    # A price (SPEC §11): money alerts and threshold invoicing run too.
    organization = OrganizationFactory(
        slug="fuzzed",
        name="Fuzzed Inc",
        credit_allowance=Decimal(1000),
        credit_price=Decimal("0.02"),
        currency="EUR",
    )
    owner = AdminMembershipFactory(
        organization=organization, user__email="owner@fuzzed.test", external_id="owner"
    )
    second_admin = AdminMembershipFactory(organization=organization, external_id="admin-2")
    members = [
        MembershipFactory(organization=organization, external_id=external_id)
        for external_id in ("alice", "bob", "carol/with-slash", "dana")
    ]
    limits_on(organization, 100, admins=[owner], excluded_sources=["workflow"])
    custom_limit_set(organization=organization, membership=members[0], limit=Decimal("12.5"))
    custom_limit_set(organization=organization, membership=members[1], limit=None)
    user_alert_policy_update(
        organization=organization,
        enabled=True,
        threshold=Decimal(10),
        # True makes an admin of the policy who crosses the threshold a 500:
        # see test_an_admin_of_the_user_alert_policy_can_cross_its_threshold.
        notify_user=False,
        admins=[second_admin],
    )
    alerts = [
        alert_create(organization=organization, threshold_type="percentage", threshold=Decimal(5)),
        absolute_alert(organization, 500, admins=[owner]),
        alert_create(organization=organization, threshold_type="spend", threshold=Decimal(3)),
        alert_create(
            organization=organization, threshold_type="invoice_total", threshold=Decimal("0.5")
        ),
    ]
    billing_threshold_set(
        organization=organization,
        settings=BillingThresholdInput(enabled=True, amount=Decimal("0.25")),
    )
    # The credit balance (SPEC §9): grants (one expiring, one voided later by
    # the fuzzing, maybe), balance alerts of each type, an auto top-up.
    grants = [
        credit_grant_create(organization=organization, grant=GrantInput(**fields)).grant
        for fields in (
            {"kind": "purchased", "credits": Decimal(200), "idempotency_key": "seed-grant"},
            {
                "kind": "promotional",
                "credits": Decimal("12.5"),
                "priority": 10,
                "expires_at": datetime.now(UTC) + timedelta(days=3),
                "note": "Welcome",
            },
        )
    ]
    balance_alerts = [
        balance_alert_create(organization=organization, alert_type="depleted"),
        balance_alert_create(
            organization=organization,
            alert_type="dropped",
            threshold=Decimal(900),
            notify="specific_admins",
            admins=[owner],
        ),
        balance_alert_create(organization=organization, alert_type="recovered"),
    ]
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(enabled=True, threshold=Decimal(50), credits=Decimal(100)),
    )
    organization.refresh_from_db()  # it keeps a credit balance now
    usage_ingest(
        organization=organization,
        events=[
            UsageInput(idempotency_key=f"seed-{index}", credits=Decimal(credits), user=user)
            for index, (credits, user) in enumerate(
                [("12.5", "alice"), ("30", "bob"), ("0.000001", None), ("25", "dana")]
            )
        ],
    )
    usage_consume(
        organization=organization,
        membership=members[3],
        credits=Decimal("1.5"),
        idempotency_key="seed-consume",
    )
    # Holds (SPEC §13): open ones, to settle or release, and a settled one.
    holds = [
        hold_create(
            organization=organization,
            membership=member,
            credits=Decimal(2),
            idempotency_key=f"seed-hold-{member.external_id}",
        ).hold(organization)
        for member in (owner, members[1], members[3])
    ]
    hold_settle(organization=organization, hold_id=holds[2].pk, credits=Decimal(1))
    # Meters (SPEC §10), with values of the organization and of members.
    period_start = current_period(organization).start
    for meter, value in (
        (MeterFactory(key="storage_gb", unit="GB", aggregation="max"), "2.5"),
        (MeterFactory(key="meetings", unit="meetings", aggregation="count"), 3),
        (
            MeterFactory(
                key="active_users", unit="users", aggregation="unique_count", property="user_id"
            ),
            2,
        ),
    ):
        meter_usage_row(meter, organization, value, period_start=period_start)
        meter_usage_row(meter, organization, value, period_start=period_start, membership=owner)
    invoices = [
        Invoice.objects.create(
            organization=organization,
            reason=reason,
            period_start=datetime(2026, 5, 1, tzinfo=UTC),
            covered_from=datetime(2026, 5, 1, tzinfo=UTC),
            covered_through=datetime(2026, 6, 1, tzinfo=UTC),
            credits=Decimal("12.5"),
            amount=Decimal("0.25"),
            currency="EUR",
        )
        for reason in ("threshold", "period_end")
    ]
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url="https://hooks.example.com/headroom",
        secret="whsec_" + "A" * 32,
        events=["alert.triggered"],
    )
    _, key = api_key_create(organization=organization)
    users = list(
        Membership.objects.filter(organization=organization).values_list("external_id", flat=True)
    )
    KNOWN.update(
        user=[*users, "nobody"],
        alert=[alert.pk for alert in alerts],
        webhook=[endpoint.pk],
        grant=[grant.pk for grant in grants],
        balance_alert=[alert.pk for alert in balance_alerts],
        invoice=[invoice.pk for invoice in invoices],
        hold=[hold.pk for hold in holds],
    )
    return World(
        organization=organization,
        key=key,
        users=users,
        alert_ids=[alert.pk for alert in alerts],
        webhook_endpoint_ids=[endpoint.pk],
        grant_ids=[grant.pk for grant in grants],
        balance_alert_ids=[alert.pk for alert in balance_alerts],
    )


@pytest.fixture
def in_process(settings: Any) -> Iterator[None]:
    """Call the WSGI handler as Django's test client does: on the test's own
    connection, which a request's start or end must not close (it is inside
    the test's transaction).
    """
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_within_its_document(
    case: Any, world: World, in_process: None
) -> None:
    headers = {"Authorization": f"Bearer {world.key}"}
    with transaction.atomic():
        response = case.call(headers=headers)
        transaction.set_rollback(True)
    TALLY.record(case, response.status_code)
    case.validate_response(response, checks=CHECKS, headers=headers)


UNAUTHENTICATED = (
    {},
    {"Authorization": "Basic b3duZXI6cGFzcw=="},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer not-a-key"},
)


def _operations() -> list[Any]:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 42
    return operations


def _plain_case(operation: Any, world: World) -> Any:
    """A request to `operation` naming real objects, with an empty body if it takes one."""
    names = [part[1:-1] for part in operation.path.split("/") if part.startswith("{")]
    return operation.Case(
        path_parameters={
            name: world.alert_ids[0] if name == "id" else world.users[0] for name in names
        },
        body={} if operation.body else NOT_SET,
        media_type="application/json" if operation.body else None,
    )


def test_every_operation_declares_its_401(world: World, in_process: None) -> None:
    """No key, a malformed header, a wrong key: every operation answers 401, as declared."""
    for operation in _operations():
        for headers in UNAUTHENTICATED:
            case = _plain_case(operation, world)
            response = case.call(headers=headers)
            assert response.status_code == 401, (operation.label, headers, response.text)
            assert response.json()["error"]["code"] in ("unauthenticated", "invalid_api_key")
            case.validate_response(response, checks=CHECKS, headers=headers)


def test_every_operation_declares_its_429(world: World, in_process: None, settings: Any) -> None:
    """Past the key's rate limit every operation answers 429 with Retry-After, as declared."""
    settings.API_RATE_LIMIT = "1/h"
    headers = {"Authorization": f"Bearer {world.key}"}
    first = schema.find_operation_by_label("GET /api/v1/organization")
    assert first is not None
    assert first.Case().call(headers=headers).status_code == 200
    for operation in _operations():
        case = _plain_case(operation, world)
        response = case.call(headers=headers)
        assert response.status_code == 429, (operation.label, response.text)
        assert int(response.headers["retry-after"][0]) >= 1
        case.validate_response(
            response, checks=[*CHECKS, response_headers_conformance], headers=headers
        )


# What the fuzzing found, kept as plain regression tests.

MAX = "99999999999999.999999"  # the largest credits one event may carry


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("get", "/api/v1/members/%00", None, 400, None),
        ("delete", "/api/v1/user-limits/custom/a%00b", None, 400, None),
        ("patch", "/api/v1/organization", {"name": "Acme\x00"}, 422, "name"),
        # A JSON escape of half a surrogate pair: valid JSON, text no database takes.
        ("patch", "/api/v1/organization", {"name": "Acme\ud800"}, 422, "name"),
        (
            "post",
            "/api/v1/usage",
            {"events": [{"idempotency_key": "k\x00", "credits": 1}]},
            422,
            "events[0].idempotency_key",
        ),
        (
            "post",
            "/api/v1/usage",
            {"events": [{"idempotency_key": "k", "credits": 1, "properties": {"a\x00": 1}}]},
            422,
            "events[0].properties",
        ),
        (
            "post",
            "/api/v1/usage",
            {"events": [{"idempotency_key": "k", "credits": 1, "properties": {"a": ["\x00"]}}]},
            422,
            "events[0].properties.a[0]",
        ),
        ("get", "/api/v1/alert-events?cursor=%00", None, 400, "cursor"),
        # Totals are kept to the same precision as one event: two of the largest overflow them.
        (
            "post",
            "/api/v1/usage",
            {"events": [{"idempotency_key": f"big-{n}", "credits": MAX} for n in range(2)]},
            422,
            None,
        ),
    ],
)
def test_values_the_database_cannot_hold_are_refused_not_with_a_500(
    api: Any, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    response = api.request(method, path, body)

    assert response.status_code == status, response.content
    assert response.json()["error"]["field"] == field
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        # The bytes of half a surrogate pair, not an escape: json.loads lets them through.
        '{"name": "Acme\ud800"}'.encode("utf-8", "surrogatepass"),
        # UTF-16, which json.loads detects: a lone surrogate, and a NUL from an escape.
        '{"name": "Acme\ud800"}'.encode("utf-16-le", "surrogatepass"),
        '{"name": "Acme\\u0000"}'.encode("utf-32-le"),
    ],
)
def test_unstorable_text_without_an_escape_in_utf8_is_refused_too(api: Any, body: bytes) -> None:
    response = api.patch("/api/v1/organization", body)

    assert response.status_code == 422, response.content
    assert response.json()["error"]["field"] == "name"


def test_fractional_numbers_in_properties_are_kept_as_json_numbers(api: Any) -> None:
    response = api.post(
        "/api/v1/usage",
        '{"events": [{"idempotency_key": "k", "credits": 1, '
        '"properties": {"ratio": 1.5, "list": [0.1, {"big": 1e5}], "count": 3}}]}',
    )

    assert response.status_code == 202, response.content
    assert UsageEvent.objects.get().properties == {
        "ratio": 1.5,
        "list": [0.1, {"big": 100000.0}],
        "count": 3,
    }


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ('{"x": 1e400}', "numbers must be finite"),
        ('{"a": ' * 40 + "1" + "}" * 40, "must not nest more than 32 levels deep"),
    ],
)
def test_properties_that_cannot_be_kept_are_refused(
    api: Any, properties: str, message: str
) -> None:
    response = api.post(
        "/api/v1/usage",
        f'{{"events": [{{"idempotency_key": "k", "credits": 1, "properties": {properties}}}]}}',
    )

    assert response.status_code == 422, response.content
    assert response.json()["error"]["message"] == f"events[0].properties: {message}."


def test_an_admin_of_the_user_alert_policy_can_cross_its_threshold(
    api: Any, organization: Organization, owner: Membership
) -> None:
    user_alerts_on(organization, 10, admins=[owner], notify_user=True)

    response = api.post(
        "/api/v1/consume",
        {"user": owner.external_id, "credits": 10, "idempotency_key": "crossing"},
    )

    assert response.status_code == 200, response.content
    # The admin who crossed it is told once, as admin and as the member alike.
    assert Notification.objects.filter(channel="email", recipient=owner.user.email).count() == 1
