"""Hostile input by size and shape: no request body, however large, however
framed, is a 500. Over DATA_UPLOAD_MAX_MEMORY_SIZE the API answers 413 in its
error shape and pages a plain 413; the largest valid usage batch fits under it.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client

from billing.api import MAX_BATCH, MAX_PROPERTIES_BYTES
from billing.models import Meter, UsageEvent
from tests.factories import MembershipFactory
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

SMALL_LIMIT = 20_000
# A character that a JSON encoder escapes to its longest form (\ud83d\ude00,
# 12 bytes), and that still counts as one character against max_length.
WIDEST = "\U0001f600"


def _batch(count: int, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"credits": 1}
    if properties is not None:
        event["properties"] = properties
    return {"events": [{**event, "idempotency_key": f"k{index}"} for index in range(count)]}


def _padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with trailing whitespace (still valid) to `size` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def _post_raw(client: Client, path: str, raw: bytes, **extra: Any) -> Any:
    return client.generic("POST", path, raw, content_type="application/json", **extra)


@pytest.fixture
def small_limit(settings: Any) -> int:
    """A body limit small enough for quick bodies on either side of it."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = SMALL_LIMIT
    return SMALL_LIMIT


class TestApiBodyLimit:
    def test_the_issues_batch_fits_under_the_configured_limit(self, api):
        # Issue 13: 1,000 events with ~2.6 KB of properties each, 2.7 MB, was a 500.
        body = _batch(MAX_BATCH, {"note": "x" * 2600})
        assert len(json.dumps(body)) > 2_600_000
        response = api.post("/api/v1/usage", body)
        assert response.status_code == 202, response.content[:500]
        assert UsageEvent.objects.count() == MAX_BATCH

    def test_over_the_limit_is_a_413_in_the_error_shape(self, api, small_limit):
        raw = _padded(_batch(3), small_limit + 1)
        error = assert_error(
            _post_raw(api.client, "/api/v1/usage", raw, headers=api.headers),
            413,
            code="request_too_large",
        )
        assert error["field"] is None
        assert f"{small_limit + 1:,} bytes" in error["message"]
        assert f"{small_limit:,}" in error["message"]
        assert not UsageEvent.objects.exists()

    def test_over_the_limit_without_a_key_is_a_413_too(self, small_limit):
        raw = _padded(_batch(3), small_limit * 3)
        assert_error(_post_raw(Client(), "/api/v1/consume", raw), 413, code="request_too_large")

    def test_exactly_at_the_limit_is_read(self, api, small_limit):
        raw = _padded(_batch(3), small_limit)
        response = _post_raw(api.client, "/api/v1/usage", raw, headers=api.headers)
        assert response.status_code == 202, response.content
        assert UsageEvent.objects.count() == 3

    def test_a_body_found_too_big_while_read_is_a_413(self, api, small_limit, monkeypatch):
        # Should Content-Length understate the body (ASGI with chunked framing
        # reads past it), Django raises RequestDataTooBig as the API reads:
        # answered 413 too, not by the catch-all as a 500.
        monkeypatch.setattr("config.middleware._body_refusal", lambda request: None)
        raw = _padded(_batch(3), small_limit + 1)
        assert_error(
            _post_raw(api.client, "/api/v1/usage", raw, headers=api.headers),
            413,
            code="request_too_large",
        )


METER_KEY = "m" * 64


class TestLargestValidBatch:
    def _largest_event(self, index: int, user: str) -> dict[str, Any]:
        # Properties at their bound, shaped to grow most under a JSON
        # encoder's default ", " separators: a list of zeros.
        zeros = (MAX_PROPERTIES_BYTES - len('{"a":[]}') + 1) // 2
        properties = {"a": [0] * zeros}
        assert len(json.dumps(properties, separators=(",", ":"))) <= MAX_PROPERTIES_BYTES
        key = f"{index:04d}"
        return {
            "idempotency_key": WIDEST * (255 - len(key)) + key,
            "user": user,
            # Sixteen characters: a thousand of them add up to less than
            # the largest total the ledger holds.
            "credits": "99999999.999999",
            "source": "agent_external",
            # A meter's key is a slug (SPEC §10): 64 ASCII characters at most.
            "meter": METER_KEY,
            "quantity": "99999999.999999",
            "timestamp": "2026-01-31T09:30:00.999999+00:00",
            "properties": properties,
        }

    def test_is_accepted_and_under_the_limit(self, api, organization):
        user = WIDEST * 255
        MembershipFactory(organization=organization, external_id=user)
        Meter.objects.create(key=METER_KEY, name="Widest", unit="units", aggregation="max")
        body = {"events": [self._largest_event(index, user) for index in range(MAX_BATCH)]}
        raw = json.dumps(body).encode()  # escapes as `requests` and `json.dumps` do
        assert 12_000_000 < len(raw) <= django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        response = _post_raw(api.client, "/api/v1/usage", raw, headers=api.headers)
        assert response.status_code == 202, response.content[:500]
        assert response.json() == {"accepted": MAX_BATCH, "duplicates": 0}

    def test_properties_over_their_bound_are_a_422_naming_the_event(self, api):
        body = _batch(3)
        body["events"][2]["properties"] = {"note": "x" * MAX_PROPERTIES_BYTES}
        error = assert_error(api.post("/api/v1/usage", body), 422, field="events[2].properties")
        assert error["message"] == (
            "events[2].properties: must be at most 4,096 bytes as compact JSON (it is 4,107)."
        )
        assert not UsageEvent.objects.exists()

    def test_properties_at_their_bound_are_accepted(self, api):
        body = _batch(1)
        filler = MAX_PROPERTIES_BYTES - len(json.dumps({"note": ""}, separators=(",", ":")))
        body["events"][0]["properties"] = {"note": "x" * filler}
        assert api.post("/api/v1/usage", body).status_code == 202


class TestPageBodyLimit:
    def test_a_form_over_the_limit_is_a_plain_413(self, small_limit):
        client = Client()
        response = client.post(
            "/accounts/login/", {"email": "a@example.com", "password": "p" * (small_limit * 2)}
        )
        assert response.status_code == 413
        assert response["Content-Type"].startswith("text/plain")
        assert f"{small_limit:,}" in response.content.decode()

    def test_a_form_exactly_at_the_limit_is_read(self, small_limit):
        head = b"email=a%40example.com&password="
        raw = head + b"p" * (small_limit - len(head))
        response = Client().generic(
            "POST", "/accounts/login/", raw, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 200  # the form again, with its error
        assert b"email" in response.content

    def test_a_form_one_byte_over_the_limit_is_a_413(self, small_limit):
        head = b"email=a%40example.com&password="
        raw = head + b"p" * (small_limit + 1 - len(head))
        response = Client().generic(
            "POST", "/accounts/login/", raw, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 413


class TestFraming:
    """Bodies whose framing is odd: each is a 4xx, none a 500."""

    @pytest.mark.parametrize("declared", ["abc", "-1", "1e3", " "])
    def test_a_content_length_that_is_not_a_count(self, api, declared):
        raw = json.dumps(_batch(1)).encode()
        response = _post_raw(
            api.client, "/api/v1/usage", raw, headers=api.headers, CONTENT_LENGTH=declared
        )
        if declared.strip():
            assert_error(response, 400, code="invalid_content_length")
        else:
            assert 400 <= response.status_code < 500

    def test_a_content_length_that_is_not_a_count_on_a_page(self):
        response = Client().post(
            "/accounts/login/", {"email": "a@example.com"}, CONTENT_LENGTH="abc"
        )
        assert response.status_code == 400

    def test_a_content_length_shorter_than_the_body(self, api):
        raw = json.dumps(_batch(2)).encode()
        response = _post_raw(
            api.client, "/api/v1/usage", raw, headers=api.headers, CONTENT_LENGTH=str(len(raw) // 2)
        )
        assert_error(response, 400, code="invalid_json")
        assert not UsageEvent.objects.exists()

    def test_a_content_length_past_the_limit_over_a_small_body(self, api, small_limit):
        raw = json.dumps(_batch(1)).encode()
        response = _post_raw(
            api.client,
            "/api/v1/usage",
            raw,
            headers=api.headers,
            CONTENT_LENGTH=str(small_limit + 1),
        )
        assert_error(response, 413, code="request_too_large")

    def test_a_content_length_longer_than_the_body(self, api):
        # A client that declares more than it sends, then closes: the server's
        # stream ends early. (Django's test client asserts instead, so the
        # request goes to the WSGI handler as a server would hand it over.)
        raw = json.dumps(_batch(2)).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/v1/usage",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(raw[: len(raw) // 2]),
            "wsgi.errors": sys.stderr,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(raw)),
            "HTTP_AUTHORIZATION": api.headers["Authorization"],
        }
        statuses: list[str] = []
        # As the test client does: the test's transaction must stay open.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            body = b"".join(WSGIHandler()(environ, lambda status, headers: statuses.append(status)))
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        assert statuses == ["400 Bad Request"], body
        assert json.loads(body)["error"]["code"] == "invalid_json"
        assert not UsageEvent.objects.exists()

    def test_chunked_without_a_content_length(self, api):
        # WSGI reads Content-Length bytes: with none, the body reads as empty.
        raw = json.dumps(_batch(1)).encode()
        response = _post_raw(
            api.client,
            "/api/v1/usage",
            raw,
            headers={**api.headers, "Transfer-Encoding": "chunked"},
            CONTENT_LENGTH="",
        )
        assert_error(response, 422, code="invalid")
        assert response.json()["error"]["message"] == "A JSON body is required."
