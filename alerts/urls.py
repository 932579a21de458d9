from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from alerts import credit_views, request_views, views, webhook_views

urlpatterns: list[URLPattern | URLResolver] = [
    path("settings/limits/", views.limits_settings, name="limits_settings"),
    path("settings/limits/alerts/new/", views.alert_add, name="alert_add"),
    path("settings/limits/alerts/<int:alert_id>/", views.alert_edit, name="alert_edit"),
    path("settings/limits/alerts/<int:alert_id>/delete/", views.alert_delete, name="alert_delete"),
    path("settings/limits/alerts/<int:alert_id>/switch/", views.alert_switch, name="alert_switch"),
    path("settings/limits/alerts/<int:alert_id>/reset/", views.alert_reset, name="alert_reset"),
    path("settings/limits/user-alerts/", views.user_alerts_save, name="user_alerts_save"),
    path(
        "settings/limits/requests/<int:request_id>/approve/",
        request_views.limit_request_approve,
        name="limit_request_approve",
    ),
    path(
        "settings/limits/requests/<int:request_id>/deny/",
        request_views.limit_request_deny,
        name="limit_request_deny",
    ),
    path("me/limit-request/", request_views.limit_request_ask, name="limit_request_ask"),
    path(
        "me/limit-request/withdraw/",
        request_views.limit_request_withdraw,
        name="limit_request_withdraw",
    ),
    path("settings/limits/user-limits/", views.user_limits_save, name="user_limits_save"),
    path("settings/limits/custom-limits/", views.custom_limit_add, name="custom_limit_add"),
    path(
        "settings/limits/custom-limits/<int:membership_id>/",
        views.custom_limit_edit,
        name="custom_limit_edit",
    ),
    path(
        "settings/limits/custom-limits/<int:membership_id>/delete/",
        views.custom_limit_remove,
        name="custom_limit_remove",
    ),
    path(
        "settings/limits/billing-threshold/",
        views.billing_threshold_save,
        name="billing_threshold_save",
    ),
    path("credits/", credit_views.credits_settings, name="credits_settings"),
    path("credits/balance-alerts/new/", credit_views.balance_alert_add, name="balance_alert_add"),
    path(
        "credits/balance-alerts/<int:alert_id>/",
        credit_views.balance_alert_edit,
        name="balance_alert_edit",
    ),
    path(
        "credits/balance-alerts/<int:alert_id>/delete/",
        credit_views.balance_alert_delete,
        name="balance_alert_delete",
    ),
    path("credits/auto-top-up/", credit_views.auto_top_up_save, name="auto_top_up_save"),
    path("settings/webhooks/", webhook_views.webhooks_settings, name="webhooks_settings"),
    path("settings/webhooks/new/", webhook_views.webhook_add, name="webhook_add"),
    path(
        "settings/webhooks/<int:endpoint_id>/remove/",
        webhook_views.webhook_remove,
        name="webhook_remove",
    ),
]
