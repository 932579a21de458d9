from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import authenticate
from django.contrib.auth.forms import BaseUserCreationForm, UserChangeForm
from django.http import HttpRequest

from accounts.models import Membership, User, normalize_email


class LoginForm(forms.Form):
    email = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    error_messages = {
        "invalid_login": "That email and password do not match an account. Please try again.",
    }

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.user: User | None = None

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        email, password = cleaned.get("email"), cleaned.get("password")
        if email and password:
            user = authenticate(self.request, email=email, password=password)
            if not isinstance(user, User):
                raise forms.ValidationError(
                    self.error_messages["invalid_login"], code="invalid_login"
                )
            self.user = user
        return cleaned


class SwitchOrganizationForm(forms.Form):
    organization = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class AdminUserCreationForm(BaseUserCreationForm):
    """The Django admin's add form for our email-based user."""

    class Meta:
        model = User
        fields = ("email",)
        field_classes: dict[str, Any] = {}


class AdminUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"
        field_classes: dict[str, Any] = {}


class MembershipAdminForm(forms.ModelForm):
    """Membership form for the Django admin: the external id defaults to the email."""

    class Meta:
        model = Membership
        fields = ("organization", "user", "role", "external_id")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        external_id = self.fields.get("external_id")
        if external_id is not None:
            external_id.required = False
            external_id.help_text = "How the host application names this user. Empty: the email."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        user = cleaned.get("user")
        if not cleaned.get("external_id") and user is not None:
            cleaned["external_id"] = user.email
        return cleaned
