"""The forms of limit-increase requests (SPEC §14): the member's, on the
blocked notice, and the admin's answer on Limits & Alerts.
"""

from __future__ import annotations

from django import forms

from alerts.request_models import MAX_REASON_LENGTH
from config.credits import CreditsFormField


class LimitRequestForm(forms.Form):
    credits = CreditsFormField(label="Credits", help_text="How many more credits you need.")
    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What for: your admins see it with the request.",
    )


class LimitRequestApproveForm(forms.Form):
    credits = CreditsFormField(
        label="Credits",
        help_text="Added to the member's limit: those asked for, or more, or fewer.",
    )
    this_period_only = forms.BooleanField(
        label="For this billing period only",
        required=False,
        help_text="At the next billing period the member's limit returns to what it is now.",
    )


class LimitRequestDenyForm(forms.Form):
    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Told to the member in the email.",
    )
