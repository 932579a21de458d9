from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from accounts import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("accounts/login/", views.login_view, name="login"),
    path("accounts/logout/", views.logout_view, name="logout"),
    path(
        "accounts/switch-organization/",
        views.switch_organization_view,
        name="switch_organization",
    ),
    path("members/search/", views.member_search, name="member_search"),
    path("", include("alerts.urls")),
    path("", include("billing.urls")),
]
