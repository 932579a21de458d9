from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import authenticate
from django.contrib.auth.forms import BaseUserCreationForm, UserChangeForm
from django.http import HttpRequest
from django.urls import reverse

from accounts.models import Membership, Role, User, normalize_email


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
        fields = ("organization", "user", "role", "external_id", "name")

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


class MemberPicker(forms.Widget):
    """Search-as-you-type over the organization's members, for thousands of them.

    The field's queryset scopes both what can be chosen and what the search
    endpoint is asked for (`role`). Only the chosen members are rendered:
    never a select of every member.
    """

    template_name = "components/member_picker.html"
    choices: Any = ()  # set by the field: a ModelChoiceIterator over its queryset

    def __init__(
        self, *, multiple: bool, role: str | None = None, attrs: dict[str, Any] | None = None
    ) -> None:
        super().__init__(attrs)
        self.multiple = multiple
        self.role = role

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if self.multiple:
            return data.getlist(name) if hasattr(data, "getlist") else data.get(name)
        return data.get(name)

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return False  # an empty picker means "nobody chosen", not "field left out"

    def _chosen(self, value: Any) -> list[Membership]:
        values = value if isinstance(value, (list, tuple)) else [value]
        values = [v for v in values if v not in (None, "")]
        chosen = [v for v in values if isinstance(v, Membership)]
        wanted = [
            int(v)
            for v in values
            if not isinstance(v, Membership) and str(v).isdigit() and len(str(v)) < 19
        ]
        if wanted:
            queryset = self.choices.queryset
            found = {m.pk: m for m in queryset.filter(pk__in=wanted).select_related("user")}
            chosen += [found[pk] for pk in wanted if pk in found]
        return chosen

    def format_value(self, value: Any) -> Any:
        return value

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        query = "?role=" + self.role if self.role else ""
        context["widget"] |= {
            "chosen": self._chosen(value),
            "multiple": self.multiple,
            "search_url": reverse("member_search") + query,
            "noun": "admins" if self.role == "admin" else "members",
            "describedby": context["widget"]["attrs"].get("aria-describedby", ""),
            "invalid": context["widget"]["attrs"].get("aria-invalid") == "true",
        }
        return context


def member_choice_label(membership: Membership) -> str:
    name, email = membership.member_name, membership.user.email
    return f"{name} ({email})" if name else email


class MemberField(forms.ModelChoiceField):
    """One member of the organization, chosen with a `MemberPicker`."""

    def __init__(self, *, queryset: Any, role: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MemberPicker(multiple=False, role=role))
        super().__init__(queryset=queryset, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return value  # a Membership stays one: the picker shows it without a query

    def label_from_instance(self, obj: Membership) -> str:
        return member_choice_label(obj)


class MembersField(forms.ModelMultipleChoiceField):
    """Members of the organization, chosen with a `MemberPicker`."""

    def __init__(self, *, queryset: Any, role: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MemberPicker(multiple=True, role=role))
        super().__init__(queryset=queryset, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return value

    def label_from_instance(self, obj: Membership) -> str:
        return member_choice_label(obj)


class MemberSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, strip=True)
    role = forms.ChoiceField(required=False, choices=[("", "Any"), *Role.choices])


class MemberFilterForm(forms.Form):
    """The Members page's search box and page number (GET)."""

    q = forms.CharField(label="Search members", required=False, max_length=200, strip=True)
    page = forms.IntegerField(required=False, min_value=1, max_value=10**6)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=Role.choices)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text="What will use the key, so that you recognise it later: “Production app”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
