"""The bare app's one URL: the same path and answer as the API's floor."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path


def floor(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"allowed": True})


urlpatterns = [path("api/v1/floor", floor)]
