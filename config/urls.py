from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path

from config.api import api
from config.errors import error_response


def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return error_response(404, f"No API endpoint at {request.path}.", code="not_found")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/v1/(?P<rest>.*)$", api_not_found),
    path("", include("accounts.urls")),
]
