"""The forms of the Manage credits page (SPEC §9): a balance alert and the
auto top-up. They parse input; the rules are the services'
(`alerts.services.credit_settings`), whose `InvalidInput` is shown on the
field it names (`config.forms.form_saved`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from accounts.forms import MembersField
from accounts.models import Membership, Organization, Role
from alerts.forms import switch
from alerts.models import BalanceAlertType, Recipients
from alerts.services.credit_settings import AutoTopUpInput
from billing.models import GRANT_PRIORITY_DEFAULT, GRANT_PRIORITY_MAX, GRANT_PRIORITY_MIN
from config.credits import CreditsFormField


class BalanceAlertForm(forms.Form):
    # Named as the service names them, so that its refusals land on the right field.
    type = forms.ChoiceField(
        label="Alert when the balance",
        choices=BalanceAlertType.choices,
        initial=BalanceAlertType.DEPLETED,
        widget=forms.RadioSelect,
        help_text="Depleted: it reaches 0. Dropped below: it falls below the threshold. "
        "Recovered: it goes from 0 back above 0 (a grant, a new period's allowance).",
    )
    threshold = CreditsFormField(
        label="Threshold",
        required=False,
        help_text="In credits: the alert fires when the balance goes from at least this "
        "to below it.",
    )
    notify = forms.ChoiceField(
        label="Notify",
        choices=Recipients.choices,
        initial=Recipients.ALL_ADMINS,
        widget=forms.RadioSelect,
    )
    admins = MembersField(
        label="Admins", queryset=Membership.objects.none(), role=Role.ADMIN, required=False
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["admins"].queryset = Membership.objects.filter(  # type: ignore[attr-defined]
            organization=organization, role=Role.ADMIN
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The threshold field is hidden for the other types: what it still holds is not asked.
        if cleaned.get("type") != BalanceAlertType.DROPPED:
            cleaned["threshold"] = None
            self.errors.pop("threshold", None)
        return cleaned

    @property
    def chosen(self) -> dict[str, Any]:
        """The service's arguments (`alert_type`, `threshold`, `notify`, `admins`)."""
        data = self.cleaned_data
        return {
            "alert_type": data["type"],
            "threshold": data["threshold"],
            "notify": data["notify"],
            "admins": list(data["admins"]) if data["notify"] == Recipients.SPECIFIC_ADMINS else [],
        }


class AutoTopUpForm(forms.Form):
    enabled = switch("Auto Top-Up")
    threshold = CreditsFormField(
        label="Top up when the balance falls below",
        required=False,
        help_text="In credits. A write that takes the balance below this adds a top-up grant.",
    )
    credits = CreditsFormField(
        label="Top up by",
        required=False,
        help_text="Credits of each top-up grant; your billing system is told of each one.",
    )
    priority = forms.IntegerField(
        label="Priority",
        initial=GRANT_PRIORITY_DEFAULT,
        min_value=GRANT_PRIORITY_MIN,
        max_value=GRANT_PRIORITY_MAX,
        help_text="1-100: grants with a lower number are drawn first.",
    )
    expires_after_days = forms.IntegerField(
        label="Expires after (days)",
        required=False,
        min_value=1,
        help_text="Empty: top-up credits never expire.",
    )
    max_per_period = forms.IntegerField(
        label="Most top-ups per billing period",
        initial=3,
        min_value=1,
        help_text="Past it no top-up is made and the admins are emailed.",
    )

    SECONDARY = ("priority", "expires_after_days", "max_per_period")

    @property
    def secondary_errors(self) -> bool:
        return any(name in self.errors for name in self.SECONDARY)

    @property
    def settings(self) -> AutoTopUpInput:
        data = self.cleaned_data
        threshold: Decimal | None = data["threshold"]
        credits: Decimal | None = data["credits"]
        return AutoTopUpInput(
            enabled=data["enabled"],
            threshold=threshold,
            credits=credits,
            priority=data["priority"],
            expires_after_days=data["expires_after_days"],
            max_per_period=data["max_per_period"],
        )
