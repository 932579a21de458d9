from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from billing import assistant, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("usage/", views.usage_monitor, name="usage_monitor"),
    path("usage/export.csv", views.usage_export, name="usage_export"),
    path("me/usage/", views.my_usage, name="my_usage"),
    path("assistant/", assistant.assistant, name="assistant"),
]
