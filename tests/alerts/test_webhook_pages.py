"""The Webhooks page: add an endpoint (its secret shown once), refusals shown
inline with nothing stored, remove, recent deliveries in one query, roles
and tenancy.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.models import Channel, DeliveryAttempt, Notification, WebhookEndpoint
from alerts.webhooks import MAX_WEBHOOK_ENDPOINTS, webhook_endpoint_create
from tests.fixtures import logged_in
from tests.helpers import page_html

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
PAGE = "/settings/webhooks/"
ADD = "/settings/webhooks/new/"


def add_form(url: str = "https://hooks.example.com/headroom", events=None) -> dict:
    return {
        "webhook-url": url,
        "webhook-events": ["alert.triggered", "user_limit.reached"] if events is None else events,
    }


def delivery(
    endpoint: WebhookEndpoint, *, key: str, status: str = "sent", **fields
) -> Notification:
    return Notification.objects.create(
        organization=endpoint.organization,
        group_key=key,
        channel=Channel.WEBHOOK,
        recipient=str(endpoint.pk),
        event_type="alert.triggered",
        status=status,
        **fields,
    )


# The page


def test_the_page_has_its_sections_and_labels(owner):
    html = page_html(owner, PAGE)
    for text in (
        "<h1>Webhooks</h1>",
        "Add endpoint",
        "Recent deliveries",
        "No webhook endpoints yet",
    ):
        assert text in html
    # A real label for the URL and one checkbox, with its label, per event type the API accepts.
    assert '<label for="id_webhook-url">URL</label>' in html
    for index, event in enumerate(
        ("alert.triggered", "user_alert.triggered", "user_limit.reached")
    ):
        assert f'<label for="id_webhook-events_{index}"><input type="checkbox"' in html
        assert f'value="{event}"' in html
    assert "whsec_" not in html


def test_the_sidebar_links_to_the_page_for_admins_only(owner, member):
    assert (
        'href="/settings/webhooks/"' in logged_in(owner).get("/settings/limits/").content.decode()
    )
    assert 'href="/settings/webhooks/"' not in logged_in(member).get("/me/usage/").content.decode()


def test_endpoints_are_listed_with_events_and_state(owner, organization):
    live, _ = webhook_endpoint_create(
        organization=organization, url="https://live.example.com/h", events=["alert.triggered"]
    )
    gone, _ = webhook_endpoint_create(
        organization=organization, url="https://gone.example.com/h", events=["user_limit.reached"]
    )
    gone.disabled_at = timezone.now()
    gone.disabled_reason = "The endpoint answered 410 Gone."
    gone.save()

    html = logged_in(owner).get(PAGE).content.decode()

    live_row = html.split(f'id="webhook-endpoint-{live.pk}"')[1].split("</tr>")[0]
    gone_row = html.split(f'id="webhook-endpoint-{gone.pk}"')[1].split("</tr>")[0]
    assert "https://live.example.com/h" in live_row and "alert.triggered" in live_row
    assert "Enabled" in live_row
    assert "https://gone.example.com/h" in gone_row and "user_limit.reached" in gone_row
    assert "Disabled" in gone_row and "410 Gone" in gone_row
    assert live.secret not in html and gone.secret not in html


# Add endpoint


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
def test_adding_shows_the_secret_once(owner, organization, htmx):
    client = logged_in(owner)

    response = client.post(ADD, add_form(), **({"headers": HTMX} if htmx else {}))

    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(organization=organization)
    assert endpoint.url == "https://hooks.example.com/headroom"
    assert endpoint.events == ["alert.triggered", "user_limit.reached"]
    html = response.content.decode()
    assert endpoint.secret.startswith("whsec_")
    assert f'value="{endpoint.secret}"' in html
    assert "It will not be shown again" in html
    # The list moves out of band with htmx; without it the answer is the whole page.
    assert 'id="webhook-endpoints"' in html
    assert ("hx-swap-oob" in html) is htmx
    # Never again: not on the page, not in the next answer.
    assert endpoint.secret not in client.get(PAGE).content.decode()
    again = client.post(ADD, add_form("https://two.example.com/h"), headers=HTMX)
    assert endpoint.secret not in again.content.decode()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (add_form(url="ftp://files.example.com/x"), "The URL must start with https:// or http://."),
        (add_form(url=""), "This field is required."),
        (add_form(url="https://exa mple.com/"), "must not contain spaces"),
        (add_form(events=[]), "Choose at least one event type."),
        (add_form(events=["alert.triggered", "usage.ingested"]), "Select a valid choice."),
    ],
    ids=["scheme", "empty", "spaces", "no-events", "unknown-event"],
)
def test_bad_input_is_422_inline_and_nothing_is_stored(owner, form, message):
    response = logged_in(owner).post(ADD, form, headers=HTMX)

    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    assert 'id="webhook-add"' in html and "field-invalid" in html
    assert "whsec_" not in html
    assert not WebhookEndpoint.objects.exists()


def test_a_private_address_is_refused_when_private_urls_are_off(owner, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    client = logged_in(owner)

    htmx = client.post(ADD, add_form(url="http://10.0.0.5/hook"), headers=HTMX)
    page = client.post(ADD, add_form(url="http://127.0.0.1:8000/hook"))

    for response in (htmx, page):
        assert response.status_code == 422
        assert "does not resolve to a public address" in response.content.decode()
    assert "<h1>Webhooks</h1>" in page.content.decode()  # without JS: the page, with the error
    assert not WebhookEndpoint.objects.exists()


def test_the_cap_of_endpoints_is_the_apis(owner, organization):
    for n in range(MAX_WEBHOOK_ENDPOINTS):
        webhook_endpoint_create(
            organization=organization, url=f"https://h{n}.example.com/", events=["alert.triggered"]
        )
    client = logged_in(owner)

    assert "the most it can have" in client.get(PAGE).content.decode()
    response = client.post(ADD, add_form(), headers=HTMX)

    assert response.status_code == 422
    assert "at most 20 webhook endpoints" in response.content.decode()
    assert WebhookEndpoint.objects.count() == MAX_WEBHOOK_ENDPOINTS


# Remove


def test_remove_asks_first_then_removes(owner, organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="https://bye.example.com/h", events=["alert.triggered"]
    )
    client = logged_in(owner)
    url = f"/settings/webhooks/{endpoint.pk}/remove/"

    dialog = client.get(url, headers=HTMX)
    assert dialog.status_code == 200
    assert "Remove the endpoint https://bye.example.com/h?" in dialog.content.decode()
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()

    response = client.post(url, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert "closeDialog" in response["HX-Trigger"]
    html = response.content.decode()
    assert "Endpoint https://bye.example.com/h removed." in html
    assert "No webhook endpoints yet" in html
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_remove_without_javascript(owner, organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="https://bye.example.com/h", events=["alert.triggered"]
    )
    client = logged_in(owner)
    url = f"/settings/webhooks/{endpoint.pk}/remove/"

    page = client.get(url)
    assert page.status_code == 200 and "<html" in page.content.decode()
    response = client.post(url, follow=True)

    assert response.redirect_chain == [(PAGE, 302)]
    assert "Endpoint https://bye.example.com/h removed." in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


# Recent deliveries


def test_deliveries_are_listed_with_their_status(owner, organization, other_organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="https://hooks.example.com/a", events=["alert.triggered"]
    )
    removed, _ = webhook_endpoint_create(
        organization=organization, url="https://old.example.com/b", events=["alert.triggered"]
    )
    globex, _ = webhook_endpoint_create(
        organization=other_organization,
        url="https://globex.example.com/",
        events=["alert.triggered"],
    )
    now = timezone.now()
    sent = delivery(endpoint, key="1", status="sent", attempts=2, created_at=now)
    DeliveryAttempt.objects.create(notification=sent, response_status=503, started_at=now)
    DeliveryAttempt.objects.create(
        notification=sent,
        response_status=204,
        succeeded=True,
        started_at=now + timedelta(seconds=5),
    )
    failed = delivery(
        removed, key="2", status="failed", attempts=1, created_at=now - timedelta(minutes=1)
    )
    DeliveryAttempt.objects.create(notification=failed, response_status=500, started_at=now)
    pending = delivery(endpoint, key="3", status="pending", created_at=now - timedelta(minutes=2))
    delivery(globex, key="4")
    Notification.objects.create(  # an email: not a webhook delivery
        organization=organization,
        group_key="5",
        channel=Channel.EMAIL,
        recipient="owner@acme.test",
        event_type="alert_email",
    )
    removed.delete()

    html = logged_in(owner).get(PAGE).content.decode()

    def row(notification: Notification) -> str:
        return html.split(f'id="webhook-delivery-{notification.pk}"')[1].split("</tr>")[0]

    assert "https://hooks.example.com/a" in row(sent)
    assert "Sent" in row(sent) and ">2<" in row(sent) and ">204<" in row(sent)
    assert "Removed endpoint" in row(failed) and "Failed" in row(failed) and ">500<" in row(failed)
    assert "Pending" in row(pending) and ">0<" in row(pending)
    assert html.count('id="webhook-delivery-') == 3
    assert "globex" not in html and "owner@acme.test" not in html.split("Recent deliveries")[1]
    # Newest first.
    assert html.index(f"webhook-delivery-{sent.pk}") < html.index(f"webhook-delivery-{failed.pk}")
    assert html.index(f"webhook-delivery-{failed.pk}") < html.index(
        f"webhook-delivery-{pending.pk}"
    )


def test_only_the_last_20_deliveries_are_shown_in_a_bounded_number_of_queries(owner, organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="https://hooks.example.com/a", events=["alert.triggered"]
    )
    client = logged_in(owner)
    client.get(PAGE)  # session and first-visit writes out of the way
    delivery(endpoint, key="first")
    with CaptureQueriesContext(connection) as one:
        client.get(PAGE)
    for n in range(30):
        notification = delivery(endpoint, key=f"k{n}", attempts=1)
        DeliveryAttempt.objects.create(notification=notification, response_status=200)

    with CaptureQueriesContext(connection) as thirty:
        html = client.get(PAGE).content.decode()

    assert html.count('id="webhook-delivery-') == 20
    assert len(thirty) == len(one)
    assert len(thirty) <= 6, [q["sql"] for q in thirty]
    assert sum("alerts_notification" in q["sql"] for q in thirty) == 1


# Roles and tenancy


def test_members_get_403(member, organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="https://hooks.example.com/a", events=["alert.triggered"]
    )
    client = logged_in(member)

    for method, path in (
        ("get", PAGE),
        ("post", ADD),
        ("get", f"/settings/webhooks/{endpoint.pk}/remove/"),
        ("post", f"/settings/webhooks/{endpoint.pk}/remove/"),
    ):
        response = getattr(client, method)(path, add_form() if method == "post" else None)
        assert response.status_code == 403, (method, path)
    assert WebhookEndpoint.objects.count() == 1


def test_another_organizations_endpoint_is_404(outsider, organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization, url="https://acme.example.com/a", events=["alert.triggered"]
    )
    client = logged_in(outsider)

    assert client.get(f"/settings/webhooks/{endpoint.pk}/remove/").status_code == 404
    assert client.post(f"/settings/webhooks/{endpoint.pk}/remove/").status_code == 404
    assert "acme.example.com" not in client.get(PAGE).content.decode()
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
