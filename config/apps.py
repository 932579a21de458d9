"""The project's own configuration of Django's apps."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class HeadroomAdminConfig(AdminConfig):
    """Django's admin, on Headroom's site: every `@admin.register` lands on it."""

    default_site = "config.admin_site.HeadroomAdminSite"
