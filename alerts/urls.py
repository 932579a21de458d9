from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from alerts import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("settings/limits/", views.limits_settings, name="limits_settings"),
]
