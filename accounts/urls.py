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
    path("settings/members/", views.members_settings, name="members_settings"),
    path("settings/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("settings/members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("settings/api-keys/", views.api_keys_settings, name="api_keys_settings"),
    path(
        "settings/api-keys/<int:api_key_id>/revoke/",
        views.api_key_revoke_view,
        name="api_key_revoke",
    ),
    path("", include("alerts.urls")),
    path("", include("billing.urls")),
]
