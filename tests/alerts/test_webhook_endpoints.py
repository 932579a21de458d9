from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from alerts.models import Channel, Notification, WebhookEndpoint
from alerts.services.configuration import alert_create
from alerts.webhooks import (
    MAX_WEBHOOK_ENDPOINTS,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_url_validate,
)
from config.errors import InvalidInput
from tests.fixtures import ApiClient
from tests.helpers import assert_error, ingest

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/v1/webhook-endpoints"
ALL_EVENTS = ["alert.triggered", "user_alert.triggered", "user_limit.reached"]


@pytest.fixture
def public_only(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False


@pytest.fixture
def fake_dns(monkeypatch):
    """Names resolve without the network: `*.example.com` to a public address."""
    real = socket.getaddrinfo
    table = {
        "hooks.example.com": "93.184.216.34",
        "internal.example.com": "10.1.2.3",
        "mixed.example.com": ("93.184.216.34", "192.168.1.10"),
    }

    def getaddrinfo(host, *args, **kwargs):
        if host not in table:
            if host.endswith(".example.com"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(host, *args, **kwargs)
        addresses = table[host] if isinstance(table[host], tuple) else (table[host],)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class TestCreate:
    def test_create_answers_201_with_the_secret(self, api, organization):
        response = api.post(
            ENDPOINTS, {"url": "https://hooks.example.com/headroom", "events": ALL_EVENTS}
        )

        assert response.status_code == 201, response.content
        body = response.json()
        endpoint = WebhookEndpoint.objects.get()
        assert body == {
            "id": endpoint.pk,
            "url": "https://hooks.example.com/headroom",
            "events": ALL_EVENTS,
            "created_at": body["created_at"],
            "disabled": False,
            "secret": endpoint.secret,
        }
        assert endpoint.organization == organization
        assert datetime.fromisoformat(body["created_at"]).tzinfo is not None

    def test_the_secret_is_a_standard_webhooks_secret(self, api):
        secret = api.post(
            ENDPOINTS, {"url": "https://hooks.example.com/", "events": ["alert.triggered"]}
        ).json()["secret"]

        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
        # The receiver's library verifies what is signed with it.
        webhook = Webhook(secret)
        moment = datetime.now(UTC)
        signature = webhook.sign("msg_1", moment, '{"a":1}')
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature,
        }
        assert webhook.verify('{"a":1}', headers) == {"a": 1}

    def test_every_endpoint_gets_its_own_secret(self, api):
        body = {"url": "https://hooks.example.com/", "events": ["alert.triggered"]}
        first = api.post(ENDPOINTS, body).json()["secret"]
        second = api.post(ENDPOINTS, body).json()["secret"]
        assert first != second

    def test_the_secret_is_shown_only_once(self, api):
        created = api.post(
            ENDPOINTS, {"url": "https://hooks.example.com/", "events": ["alert.triggered"]}
        ).json()

        listed = api.get(ENDPOINTS)

        assert created["secret"] not in listed.content.decode()
        [item] = listed.json()["data"]
        assert "secret" not in item
        assert item == {key: value for key, value in created.items() if key != "secret"}

    def test_repeated_events_are_kept_once(self, api):
        body = {
            "url": "https://hooks.example.com/",
            "events": ["user_limit.reached", "alert.triggered", "user_limit.reached"],
        }
        events = api.post(ENDPOINTS, body).json()["events"]
        assert events == ["user_limit.reached", "alert.triggered"]

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"events": ["alert.triggered"]}, "url", None),
            ({"url": "https://hooks.example.com/"}, "events", None),
            ({"url": "https://hooks.example.com/", "events": []}, "events", "events_required"),
            ({"url": "https://hooks.example.com/", "events": ["alert.fired"]}, "events[0]", None),
            ({"url": "https://hooks.example.com/", "events": "alert.triggered"}, "events", None),
            ({"url": 42, "events": ["alert.triggered"]}, "url", None),
            ({"url": "", "events": ["alert.triggered"]}, "url", "invalid_url"),
            ({"url": "hooks.example.com/x", "events": ["alert.triggered"]}, "url", "invalid_url"),
            ({"url": "ftp://hooks.example.com/", "events": ["alert.triggered"]}, "url", None),
            ({"url": "javascript:alert(1)", "events": ["alert.triggered"]}, "url", None),
            ({"url": "https://", "events": ["alert.triggered"]}, "url", "invalid_url"),
            ({"url": "https://bad host/", "events": ["alert.triggered"]}, "url", "invalid_url"),
            ({"url": "https://a..b/", "events": ["alert.triggered"]}, "url", "invalid_url"),
            ({"url": "https://h.com:99999/", "events": ["alert.triggered"]}, "url", "invalid_url"),
            ({"url": "https://h.com:port/", "events": ["alert.triggered"]}, "url", "invalid_url"),
            (
                {"url": "https://h.com/" + "x" * 2000, "events": ["alert.triggered"]},
                "url",
                "invalid_url",
            ),
            (
                {"url": "https://h.com/", "events": ["alert.triggered"], "secret": "mine"},
                "secret",
                None,
            ),
        ],
    )
    def test_bad_input_is_422_and_creates_nothing(self, api, body, field, code):
        assert_error(api.post(ENDPOINTS, body), 422, code, field)
        assert not WebhookEndpoint.objects.exists()

    def test_bad_bodies_are_errors_not_500(self, api):
        assert_error(api.post(ENDPOINTS, "{nope"), 400, "invalid_json")
        assert_error(api.post(ENDPOINTS, ["https://h.com/"]), 422)
        assert_error(api.post(ENDPOINTS), 400, "invalid_json")

    def test_cap_on_endpoints(self, api, organization):
        for _ in range(MAX_WEBHOOK_ENDPOINTS):
            webhook_endpoint_create(
                organization=organization, url="https://h.com/", events=["alert.triggered"]
            )
        body = {"url": "https://h.com/", "events": ["alert.triggered"]}
        assert_error(api.post(ENDPOINTS, body), 422, "too_many_webhook_endpoints")

    def test_needs_a_key(self, organization):
        body = {"url": "https://h.com/", "events": ["alert.triggered"]}
        assert_error(ApiClient(None).post(ENDPOINTS, body), 401)
        assert_error(ApiClient(None).get(ENDPOINTS), 401)


class TestPrivateAddresses:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/x",
            "http://localhost/",
            "http://localhost:8000/hook",
            "https://10.0.0.8/hook",
            "https://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9000/",
            "http://0.0.0.0/",
            "https://internal.example.com/",
            "https://mixed.example.com/",
            "https://does-not-resolve.example.com/",
        ],
    )
    def test_refused_unless_allowed(self, api, public_only, fake_dns, url):
        response = api.post(ENDPOINTS, {"url": url, "events": ["alert.triggered"]})

        assert_error(response, 422, "url_not_public", "url")
        assert not WebhookEndpoint.objects.exists()

    def test_public_addresses_are_accepted(self, api, public_only, fake_dns):
        for url in ("https://hooks.example.com/x", "https://93.184.216.34:8443/hook"):
            response = api.post(ENDPOINTS, {"url": url, "events": ["alert.triggered"]})
            assert response.status_code == 201, response.content

    @pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://localhost/"])
    def test_accepted_when_private_urls_are_allowed(self, api, settings, url):
        settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True

        response = api.post(ENDPOINTS, {"url": url, "events": ["alert.triggered"]})

        assert response.status_code == 201, response.content
        assert response.json()["url"] == url

    def test_single_label_hosts_are_fine_in_development(self, settings):
        settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
        assert webhook_url_validate("  http://receiver:8080/hook ") == "http://receiver:8080/hook"


class TestListAndDelete:
    def test_list_pages(self, api, organization):
        for index in range(3):
            webhook_endpoint_create(
                organization=organization,
                url=f"https://h.com/{index}",
                events=["alert.triggered"],
            )
        first = api.get(f"{ENDPOINTS}?limit=2").json()
        second = api.get(f"{ENDPOINTS}?limit=2&cursor={first['next_cursor']}").json()

        urls = [e["url"] for e in first["data"] + second["data"]]
        assert urls == ["https://h.com/0", "https://h.com/1", "https://h.com/2"]
        assert second["next_cursor"] is None

    def test_disabled_endpoints_say_so(self, api, organization):
        endpoint, _ = webhook_endpoint_create(
            organization=organization, url="https://h.com/", events=["alert.triggered"]
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            disabled_at=timezone.now(), disabled_reason="410 Gone"
        )
        assert api.get(ENDPOINTS).json()["data"][0]["disabled"] is True

    def test_delete(self, api, organization):
        endpoint_id = api.post(
            ENDPOINTS, {"url": "https://h.com/", "events": ["alert.triggered"]}
        ).json()["id"]

        response = api.delete(f"{ENDPOINTS}/{endpoint_id}")

        assert response.status_code == 204
        assert not WebhookEndpoint.objects.exists()
        assert_error(api.delete(f"{ENDPOINTS}/{endpoint_id}"), 404, "webhook_endpoint_not_found")

    @pytest.mark.parametrize("endpoint_id", ["0", "424242", "99999999999999999999999"])
    def test_unknown_id_is_404(self, api, endpoint_id):
        assert_error(api.delete(f"{ENDPOINTS}/{endpoint_id}"), 404, "webhook_endpoint_not_found")

    def test_id_not_a_number_is_400(self, api):
        assert_error(api.delete(f"{ENDPOINTS}/abc"), 400, field="id")

    def test_wrong_methods_are_405(self, api, organization):
        endpoint, _ = webhook_endpoint_create(
            organization=organization, url="https://h.com/", events=["alert.triggered"]
        )
        assert_error(api.get(f"{ENDPOINTS}/{endpoint.pk}"), 405, "method_not_allowed")
        assert_error(api.patch(f"{ENDPOINTS}/{endpoint.pk}", {}), 405, "method_not_allowed")
        assert_error(api.delete(ENDPOINTS), 405, "method_not_allowed")

    def test_another_organization_cannot_see_or_delete_ours(self, api, outsider_api):
        endpoint_id = api.post(
            ENDPOINTS, {"url": "https://h.com/", "events": ["alert.triggered"]}
        ).json()["id"]

        assert outsider_api.get(ENDPOINTS).json() == {"data": [], "next_cursor": None}
        assert_error(
            outsider_api.delete(f"{ENDPOINTS}/{endpoint_id}"), 404, "webhook_endpoint_not_found"
        )
        assert WebhookEndpoint.objects.filter(pk=endpoint_id).exists()


class TestServices:
    def test_create_returns_the_endpoint_and_its_secret(self, organization):
        endpoint, secret = webhook_endpoint_create(
            organization=organization, url=" https://h.com/x ", events=["user_alert.triggered"]
        )
        endpoint.refresh_from_db()
        assert endpoint.secret == secret
        assert endpoint.url == "https://h.com/x"
        assert endpoint.events == ["user_alert.triggered"]

    def test_invalid_input_names_the_field(self, organization):
        with pytest.raises(InvalidInput) as error:
            webhook_endpoint_create(organization=organization, url="https://h.com/", events=["x"])
        assert (error.value.code, error.value.field) == ("invalid_event", "events")

    def test_subscribed_endpoints_get_the_events_they_chose(self, organization, owner):
        subscribed, _ = webhook_endpoint_create(
            organization=organization, url="https://h.com/a", events=["alert.triggered"]
        )
        webhook_endpoint_create(
            organization=organization, url="https://h.com/b", events=["user_limit.reached"]
        )
        alert_create(organization=organization, threshold_type="absolute", threshold=5)

        ingest(organization, 5, key="k")

        [webhook] = Notification.objects.filter(channel=Channel.WEBHOOK)
        assert webhook.recipient == str(subscribed.pk)
        assert webhook.event_type == "alert.triggered"
        assert webhook.payload["data"]["organization"] == organization.slug

    def test_delete(self, organization):
        endpoint, _ = webhook_endpoint_create(
            organization=organization, url="https://h.com/", events=["alert.triggered"]
        )
        webhook_endpoint_delete(endpoint=endpoint)
        assert not WebhookEndpoint.objects.exists()
