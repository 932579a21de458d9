"""The Django admin of meters (SPEC §10): platform staff define them for every
organization, through `billing.services.meters` as `create_meter` does.

A meter's key, aggregation and property are read-only once it exists: its
totals were kept by them. A meter that has counted usage, or that an alert
watches, cannot be deleted (the totals refer to it, on_delete=PROTECT): the
delete page says why instead of listing every total. The built-in meter
`credits` is no row; the list says so (templates/admin/billing/meter/).
The totals themselves (MeterUsage and the others) have no admin: they are
read on Monitor usage and over the API.

Registered from billing/admin.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import ProtectedError, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from billing.meter_selectors import CREDITS_DEFINITION, meter_uses
from billing.models import Meter
from billing.services.meters import meter_create, meter_update, meter_validate
from config.admin_kit import AddPageFieldsMixin, SavedThroughServicesMixin
from config.admin_site import CreditsAdminMixin
from config.errors import InvalidInput
from config.forms import add_service_error

FIXED_ONCE_CREATED = ("key", "aggregation", "property")


class MeterForm(forms.ModelForm):
    """Checked by the service's own rules, with its messages, on the field at fault."""

    class Meta:
        model = Meter
        fields = ("key", "name", "unit", "aggregation", "property", "credits_per_unit")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        # On the change page the fixed fields are not in the form: the row's own.
        values: dict[str, Any] = {
            field: cleaned.get(field) if field in self.fields else getattr(self.instance, field)
            for field in self.Meta.fields
        }
        try:
            meter_validate(
                key=values["key"],
                name=values["name"],
                unit=values["unit"],
                aggregation=values["aggregation"],
                property=values["property"] or "",
                credits_per_unit=values["credits_per_unit"],
            )
        except InvalidInput as error:
            add_service_error(self, error)
        return cleaned


@admin.register(Meter)
class MeterAdmin(
    AddPageFieldsMixin, SavedThroughServicesMixin, CreditsAdminMixin, admin.ModelAdmin
):
    form = MeterForm
    list_display = ("key", "name", "unit", "aggregation", "property", "credits_per_unit")
    search_fields = ("key", "name")
    search_help_text = "A meter's key or name."
    add_fields = MeterForm.Meta.fields
    fields = (*MeterForm.Meta.fields, "created_at")
    readonly_fields = (*FIXED_ONCE_CREATED, "created_at")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        return super().changelist_view(
            request, {**(extra_context or {}), "credits_meter": CREDITS_DEFINITION}
        )

    def save_row(self, obj: Meter, data: dict[str, Any], change: bool) -> Meter:
        if change:
            # The form has already set its values on `obj`: the service compares with the row.
            stored = Meter.objects.get(pk=obj.pk)
            meter_update(
                meter=stored,
                name=data["name"],
                unit=data["unit"],
                credits_per_unit=data["credits_per_unit"],
            )
            return stored
        return meter_create(
            key=data["key"],
            name=data["name"],
            unit=data["unit"],
            aggregation=data["aggregation"],
            property=data["property"] or "",
            credits_per_unit=data["credits_per_unit"],
        )

    def get_deleted_objects(
        self, objs: Iterable[Meter], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[str]]:
        """A meter in use is refused with the reason, in a line per meter,
        rather than a list of every total that refers to it."""
        meters = list(objs)
        protected = [
            f"{meter} is kept by its {', '.join(uses)}: a meter that has counted usage or "
            "that an alert watches cannot be deleted (rename it instead)."
            for meter in meters
            if (uses := meter_uses(meter))
        ]
        if protected:
            return [], {}, set(), protected
        return super().get_deleted_objects(meters, request)

    def delete_model(self, request: HttpRequest, obj: Meter) -> None:
        self.delete_queryset(request, Meter.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Meter]) -> None:
        # Usage may have been counted since the confirmation page: still refused.
        try:
            with transaction.atomic():
                queryset.delete()
        except ProtectedError:
            request.meter_kept = True  # type: ignore[attr-defined]
            self.message_user(
                request,
                "Not deleted: the meter has counted usage since (or an alert watches it).",
                messages.ERROR,
            )

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: int) -> Any:
        if getattr(request, "meter_kept", False):  # no "deleted successfully" then
            return HttpResponseRedirect(reverse("admin:billing_meter_change", args=[obj_id]))
        return super().response_delete(request, obj_display, obj_id)
