"""Pages run the page middleware; the JSON API pays for none of it
(config.middleware.PageMiddleware, issue 19).
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from tests.fixtures import logged_in

pytestmark = pytest.mark.django_db

PAGE_ONLY_HEADERS = ("Content-Security-Policy", "X-Frame-Options")


def test_an_api_request_gets_no_cookie_and_no_page_headers(api):
    response = api.get("/api/v1/credit-balance")
    assert response.status_code == 200
    assert not response.cookies
    assert not any(header in response for header in PAGE_ONLY_HEADERS)
    assert response["X-Content-Type-Options"] == "nosniff"  # the security middleware runs


def test_an_api_error_outside_the_api_handlers_keeps_the_api_shape(api):
    response = api.get("/api/v1/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert not response.cookies


def test_pages_get_their_headers_sessions_and_csrf(owner):
    client = logged_in(owner)
    page = client.get("/settings/limits/")
    assert page.status_code == 200
    assert all(header in page for header in PAGE_ONLY_HEADERS)
    assert page.wsgi_request.user == owner.user
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner.user)
    assert strict.post("/settings/limits/", {}).status_code == 403


def test_the_api_docs_page_is_a_page(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert all(header in response for header in PAGE_ONLY_HEADERS)


def test_pages_have_what_the_silenced_checks_ask_for(staff_client):
    """admin.E408-E410 and security.W002-W003 look for these in MIDDLEWARE;
    they run for every page.
    """
    for middleware in (
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ):
        assert middleware in settings.PAGE_MIDDLEWARE
    assert staff_client.get("/admin/").status_code == 200
