"""The styled 404 and 500 pages, as Django serves them with DEBUG off.

Django renders 500.html with no context at all, so the 500 test goes
through the real handler: a view that raises, answered by the test client
instead of re-raised.
"""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.template.loader import get_template
from django.test import Client
from django.urls import include, path

from tests.fixtures import logged_in

pytestmark = pytest.mark.django_db


def broken_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a view")


# A URLConf for the 500 test: the site's own URLs plus one view that fails.
urlpatterns = [
    path("broken/", broken_view),
    path("", include("config.urls")),
]


def assert_styled(html: str) -> None:
    """base.html's look: the stylesheet, the top bar with the brand, a link home."""
    assert '<link rel="stylesheet" href="/static/css/app.css">' in html
    assert 'class="topbar"' in html and "Headroom</span>" in html
    assert '<a class="btn btn-primary" href="/">Go to the home page</a>' in html


@pytest.mark.parametrize("who", ["anonymous", "owner"])
def test_an_unknown_page_is_the_styled_404(settings, who, request):
    settings.DEBUG = False
    client = Client() if who == "anonymous" else logged_in(request.getfixturevalue("owner"))

    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "<h1>Page not found</h1>" in html
    assert_styled(html)


def test_a_missing_object_of_a_page_is_the_styled_404(settings, owner):
    settings.DEBUG = False

    response = logged_in(owner).get("/settings/limits/alerts/999999/")

    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.content.decode()


@pytest.mark.urls(__name__)
def test_a_view_that_raises_is_the_styled_500(settings, owner):
    settings.DEBUG = False
    client = logged_in(owner)
    client.raise_request_exception = False

    response = client.get("/broken/")

    assert response.status_code == 500
    html = response.content.decode()
    assert "<h1>Something went wrong</h1>" in html
    assert_styled(html)
    assert "a bug in a view" not in html and "Traceback" not in html


def test_the_500_page_renders_without_any_context():
    """As Django's server_error does: Template.render({}) with no request."""
    html = get_template("500.html").render({})

    assert "<h1>Something went wrong</h1>" in html
    assert_styled(html)
