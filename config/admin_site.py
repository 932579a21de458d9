"""The Django admin's site and the helpers every app's admin shares for credits
(the other shared helpers: config/admin_kit.py).

Credits are stored with 6 decimal places; Django's admin would show every one
of them (`100.000000`) in lists, read-only fields and inputs. Admins that
show credits mix in `CreditsAdminMixin`, which shows them as the product
does (`format_credits`: 100, 0.5, 1234.000001) and still reads a submitted
value exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin
from django.contrib.admin.options import BaseModelAdmin
from django.db import models
from django.http import HttpRequest

from config.credits import CREDIT_DECIMAL_PLACES, format_credits

if TYPE_CHECKING:
    _ModelAdminBase = BaseModelAdmin[Any]
else:
    _ModelAdminBase = object


class HeadroomAdminSite(admin.AdminSite):
    site_header = "Headroom administration"
    site_title = "Headroom admin"
    index_title = "Platform"
    site_url = "/"
    # The changelists need the page's width (at 1280 px the app list beside
    # them left the tables ~600 px); the index and breadcrumbs still lead everywhere.
    enable_nav_sidebar = False


def is_credits_field(field: Any) -> bool:
    """Every credits column is a `credits_field()`: a DecimalField of 6 places."""
    return isinstance(field, models.DecimalField) and field.decimal_places == CREDIT_DECIMAL_PLACES


class CreditsInput(forms.NumberInput):
    """A credits input showing the stored value as the product writes it.

    Only the value shown changes: what is typed is read by the form's
    DecimalField as before (exactly, at most 6 places), and a value sent back
    with errors is shown as it was typed.
    """

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, Decimal) and value.is_finite():
            return format_credits(value)
        return super().format_value(value)


def credits_display(field: models.Field[Any, Any]) -> Callable[[models.Model], str | None]:
    """A list column or read-only field showing `field` as the product writes credits."""

    @admin.display(description=str(field.verbose_name), ordering=field.name)
    def display(obj: models.Model) -> str | None:
        value = getattr(obj, field.attname)
        # None shows as the admin's empty value, as the plain field would.
        return None if value is None else format_credits(value)

    # The column's CSS class stays `field-<name>`, as for the plain field.
    display.__name__ = field.name
    return display


class CreditsAdminMixin(_ModelAdminBase):
    """Credits without trailing zeros, in the change list, read-only fields and inputs.

    Django formats a DecimalField with all its decimal places wherever it
    shows one (`display_for_field`), so the credits fields are swapped for
    display callables in the list and wherever they are read-only; inputs get
    `CreditsInput`.
    """

    formfield_overrides = {models.DecimalField: {"widget": CreditsInput}}

    def _credits_displays(self) -> dict[str, Callable[..., Any]]:
        # One callable per field for the admin's life: the read-only fields
        # and the fieldsets must name the same object.
        displays: dict[str, Callable[..., Any]] | None = self.__dict__.get("_credits_by_name")
        if displays is None:
            displays = {
                field.name: credits_display(field)
                for field in self.model._meta.concrete_fields
                if is_credits_field(field)
            }
            self._credits_by_name = displays
        return displays

    def _with_credits_displays(
        self, names: Sequence[Any], only: set[str] | None = None
    ) -> list[Any]:
        displays = self._credits_displays()
        return [
            displays[name]
            if isinstance(name, str) and name in displays and (only is None or name in only)
            else name
            for name in names
        ]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        # Only ModelAdmins have a list; an inline never asks for one.
        names = super().get_list_display(request)  # type: ignore[misc]
        # A column edited in the list stays the field: its input is a CreditsInput.
        editable = set(getattr(self, "list_editable", ()))
        shown = {name for name in self._credits_displays() if name not in editable}
        return self._with_credits_displays(names, shown)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Django takes callables here too; django-stubs types the names only.
        return cast(
            "list[str]", self._with_credits_displays(super().get_readonly_fields(request, obj))
        )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        displays = self._credits_displays()
        if not displays:
            return fieldsets
        if obj is not None and not self.has_change_permission(request, obj):
            # Django shows every field read-only then.
            readonly = set(displays)
        else:
            shown = set(self.get_readonly_fields(request, obj))
            readonly = {name for name, display in displays.items() if display in shown}
        return [
            (title, {**options, "fields": self._fieldset_fields(options["fields"], readonly)})
            for title, options in fieldsets
        ]

    def _fieldset_fields(self, fields: Sequence[Any], readonly: set[str]) -> list[Any]:
        # A fieldset's line may be a tuple of fields shown side by side.
        return [
            self._with_credits_displays(field, readonly)
            if isinstance(field, (list, tuple))
            else self._with_credits_displays([field], readonly)[0]
            for field in fields
        ]
