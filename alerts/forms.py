"""The forms of the Limits & Alerts page. They parse and check input; the
rules (thresholds, recipients, who may be chosen) live in the services, whose
`InvalidInput` errors `config.forms.add_service_error` shows on the field at fault.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from accounts.forms import MemberField, MembersField
from accounts.models import Membership, Organization, Role
from alerts.models import MONEY_THRESHOLD_TYPES, Recipients, ThresholdType
from billing.models import Source
from config.credits import CreditsFormField
from config.money import currency_symbol


def _admins_of(organization: Organization) -> Any:
    return Membership.objects.filter(organization=organization, role=Role.ADMIN)


def switch(label: str) -> forms.BooleanField:
    """An on/off toggle, drawn as a switch."""
    return forms.BooleanField(
        label=label,
        required=False,
        widget=forms.CheckboxInput(attrs={"class": "switch", "role": "switch"}),
    )


class OrganizationAlertForm(forms.Form):
    threshold_type = forms.ChoiceField(
        label="Threshold type",
        choices=ThresholdType.choices,
        initial=ThresholdType.PERCENTAGE,
        widget=forms.RadioSelect,
    )
    threshold = CreditsFormField(label="Threshold")
    notify = forms.ChoiceField(
        label="Notify",
        choices=Recipients.choices,
        initial=Recipients.ALL_ADMINS,
        widget=forms.RadioSelect,
    )
    admins = MembersField(
        label="Admins", queryset=Membership.objects.none(), role=Role.ADMIN, required=False
    )
    fire_if_already_exceeded = forms.BooleanField(
        label="Notify at once if usage is already past this threshold",
        required=False,
        initial=True,
        help_text="Otherwise a threshold already passed waits for the next billing period.",
    )

    def __init__(self, *args: Any, organization: Organization, editing: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["admins"].queryset = _admins_of(organization)  # type: ignore[attr-defined]
        currency = organization.currency
        self.fields["threshold_type"].choices = [  # type: ignore[attr-defined]
            (
                value,
                f"{label} ({currency_symbol(currency)})"
                if value in MONEY_THRESHOLD_TYPES
                else label,
            )
            for value, label in ThresholdType.choices
        ]
        no_price = (
            " No credit price is set: spend and invoice total alerts wait for one."
            if organization.credit_price is None
            else ""
        )
        self.fields["threshold"].help_text = (
            "A percentage (1-100) of the credit allowance, a number of credits, or for Spend "
            f"(all usage at the credit price) and Invoice total (usage beyond the allowance "
            f"and credits, at the price) an amount in {currency} ({currency_symbol(currency)}). "
            "Forecast: a percentage of the allowance that usage is on pace to reach by the "
            "period's end (read once 3 days or 10% of the period have passed)."
            f"{no_price}"
        )
        if editing:
            # An edited threshold always re-arms the alert: it fires at once if already passed.
            del self.fields["fire_if_already_exceeded"]


class UserAlertPolicyForm(forms.Form):
    enabled = switch("Credit Usage Alerts")
    threshold = CreditsFormField(
        label="Credit Alert Threshold",
        required=False,
        help_text="Credits a member may use in a billing period before the alert fires.",
    )
    notify_user = forms.BooleanField(
        label="Notify the user who triggered the alert", required=False
    )
    admins = MembersField(
        label="Admins to Notify",
        queryset=Membership.objects.none(),
        role=Role.ADMIN,
        required=False,
    )
    fire_if_already_exceeded = forms.BooleanField(
        label="Notify at once if usage is already past this threshold",
        required=False,
        initial=True,
        help_text="Otherwise members already past it are not told this billing period; "
        "members who cross it later are.",
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["admins"].queryset = _admins_of(organization)  # type: ignore[attr-defined]


class LimitPolicyForm(forms.Form):
    enabled = switch("Per-User Credit Limits")
    default_limit = CreditsFormField(
        label="Default Limit Per User",
        required=False,
        help_text="Credits each member may use per billing period. Empty: no default limit.",
    )
    admins = MembersField(
        label="Admins to Notify",
        queryset=Membership.objects.none(),
        role=Role.ADMIN,
        required=False,
        help_text="Emailed when a member reaches their limit. None chosen: every admin.",
    )
    exclude_agent_external = switch("Exclude Agent External Deployments from Credit Limits")
    exclude_workflows = switch("Exclude Workflows from Credit Limits")

    EXCLUSIONS = {
        "exclude_agent_external": Source.AGENT_EXTERNAL,
        "exclude_workflows": Source.WORKFLOW,
    }

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["admins"].queryset = _admins_of(organization)  # type: ignore[attr-defined]

    @property
    def excluded_sources(self) -> list[str]:
        return [source for field, source in self.EXCLUSIONS.items() if self.cleaned_data[field]]


class CustomLimitForm(forms.Form):
    """A member's own limit: a number of credits, or Unlimited."""

    user = MemberField(label="User", queryset=Membership.objects.none())
    credit_limit = CreditsFormField(label="Credit Limit", required=False)
    unlimited = forms.BooleanField(label="Unlimited", required=False)

    def __init__(
        self,
        *args: Any,
        organization: Organization,
        membership: Membership | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.membership = membership
        if membership is not None:
            del self.fields["user"]  # editing: the member is fixed
        else:
            self.fields["user"].queryset = Membership.objects.filter(  # type: ignore[attr-defined]
                organization=organization
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        has_limit = cleaned.get("credit_limit") is not None
        if cleaned.get("unlimited") and has_limit:
            raise forms.ValidationError(
                "Enter a credit limit or choose Unlimited, not both.", code="both"
            )
        if not cleaned.get("unlimited") and not has_limit and "credit_limit" not in self.errors:
            self.add_error("credit_limit", "Enter a credit limit, or choose Unlimited.")
        return cleaned

    @property
    def chosen_member(self) -> Membership:
        member = self.membership or self.cleaned_data["user"]
        assert isinstance(member, Membership)
        return member

    @property
    def chosen_limit(self) -> Decimal | None:
        """The limit chosen; None: unlimited."""
        data = self.cleaned_data
        return None if data["unlimited"] else data["credit_limit"]


class BillingThresholdForm(forms.Form):
    enabled = switch("Billing Threshold")
    amount = CreditsFormField(label="Amount", required=False)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any):
        super().__init__(*args, **kwargs)
        currency = organization.currency
        self.fields["amount"].label = f"Amount ({currency_symbol(currency)} {currency})"
        self.fields["amount"].help_text = (
            "Invoice the usage beyond the allowance and credits each time the part not yet "
            "invoiced this billing period reaches this amount; what is left is invoiced at "
            "the period's end."
        )
