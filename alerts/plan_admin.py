"""The plan's alerts on the plan's admin page (SPEC §12), saved through the
services: a new one reaches every organization on the plan in one
statement, a change every copy the organization has not changed.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from accounts.models import Plan
from alerts.models import PlanAlert
from alerts.services import plan_alerts
from config.admin_kit import SavedThroughServicesFormSet, inline_on
from config.admin_site import CreditsAdminMixin
from config.errors import InvalidInput


class PlanAlertForm(forms.ModelForm):
    class Meta:
        model = PlanAlert
        fields = ("meter", "threshold_type", "threshold", "enabled", "only_future")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if {"threshold_type", "threshold"} <= cleaned.keys():
            adding = self.instance.pk is None
            meter = cleaned.get("meter") if adding else self.instance.meter
            try:
                plan_alerts.validate_plan_alert(
                    cleaned["threshold_type"], cleaned["threshold"], meter
                )
                plan = getattr(self.instance, "plan", None)
                if adding and plan is not None and plan.pk is not None:
                    plan_alerts.refuse_past_the_plan_cap(plan, meter)
            except InvalidInput as error:
                raise ValidationError(error.message) from None
        return cleaned


class PlanAlertFormSet(SavedThroughServicesFormSet):
    """`refusals`: what the services refused at saving, under the locks that
    the form's checks do not take (an organization's 25th alert meanwhile).
    """

    instance: Plan

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusals: list[str] = []

    def create_row(self, data: dict[str, Any]) -> PlanAlert | None:
        return self._refused_later(
            plan_alerts.plan_alert_create,
            plan=self.instance,
            threshold_type=data["threshold_type"],
            threshold=data["threshold"],
            meter=data.get("meter"),
            only_future=data.get("only_future", False),
        )

    def update_row(self, row: PlanAlert, data: dict[str, Any]) -> PlanAlert | None:
        stored = PlanAlert.objects.select_related("plan", "meter").get(pk=row.pk)
        return self._refused_later(
            plan_alerts.plan_alert_update,
            plan_alert=stored,
            threshold_type=data["threshold_type"],
            threshold=data["threshold"],
            enabled=data["enabled"],
        )

    def delete_row(self, row: PlanAlert) -> None:
        plan_alerts.plan_alert_delete(plan_alert=row)

    def save_new_objects(self, commit: bool = True) -> list[Any]:
        self.new_objects = [row for row in super().save_new_objects(commit) if row is not None]
        return self.new_objects

    def save_existing_objects(self, commit: bool = True) -> list[Any]:
        saved = [row for row in super().save_existing_objects(commit) if row is not None]
        self.changed_objects = [(row, fields) for row, fields in self.changed_objects if row]
        return saved

    def _refused_later(self, service: Any, **arguments: Any) -> Any:
        try:
            return service(**arguments)
        except InvalidInput as error:
            self.refusals.append(error.message)
            return None


@inline_on(Plan)
class PlanAlertInline(CreditsAdminMixin, admin.TabularInline):
    """Every organization on the plan inherits these; all its admins are told."""

    model = PlanAlert
    form = PlanAlertForm
    formset = PlanAlertFormSet
    fields = ("meter", "threshold_type", "threshold", "enabled", "only_future", "copies_count")
    readonly_fields = ("copies_count",)
    extra = 0

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        return self.readonly_fields

    @admin.display(description="organizations following it")
    def copies_count(self, plan_alert: PlanAlert) -> int | str:
        if plan_alert.pk is None:
            return "-"
        return plan_alert.copies.filter(overridden=False).count()
