"""The helpers every app's admin shares, besides the site and its credits
(config/admin_site.py).

Generic infrastructure: this module imports no app (config <- accounts <-
billing <- alerts), so that each app's admin builds on it and no app's admin
imports another's.

- History and logs: `ReadOnlyAdmin`, `DeletedWithOwnerAdmin`, `ReadOnlyMixin`,
  `json_display`.
- List filters of fixed options: `LookupListFilter`, `null_filter`.
- Writes through the services: `ServiceValidatedForm` (the services'
  validators, their `InvalidInput` shown on the field it names by `config.forms.add_service_error`),
  `SavedThroughServicesMixin` and `SavedThroughServicesFormSet`, `copy_into`,
  `SecretShownOnceMixin`; `AddPageFieldsMixin` for what the add page asks.
- Pickers: `RelatedChoicesMixin`, `ChosenLabelsAutocomplete`.
- A lower app's page showing a higher app's rows: `inline_on`, `InlinesOnPageMixin`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import BaseModelAdmin, InlineModelAdmin
from django.contrib.admin.widgets import AutocompleteSelectMultiple
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import ForeignKey, ManyToManyField, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html

from config.admin_site import CreditsAdminMixin
from config.errors import InvalidInput
from config.forms import add_service_error

if TYPE_CHECKING:
    _ModelAdminBase = BaseModelAdmin[Any]
else:
    _ModelAdminBase = object

_InlineT = TypeVar("_InlineT", bound=type)

# Rows an inline shows at most: beyond about that many, a page would post
# more fields than Django accepts (DATA_UPLOAD_MAX_NUMBER_FIELDS).
INLINE_ROWS_MAX = 100


# History and logs


class ReadOnlyMixin(_ModelAdminBase):
    """Seen, never added or changed by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyMixin, CreditsAdminMixin, admin.ModelAdmin):
    """History and logs: seen, never edited by hand (credits shown as the product writes them)."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeletedWithOwnerAdmin(ReadOnlyAdmin):
    """Rows kept by the services (totals, the audit trail), never by hand.
    Deleting a member or an organization deletes its rows, as the API's member
    deletion does: asked while deleting those, the answer is yes; on the rows'
    own pages, no.
    """

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        match = request.resolver_match
        if match is None or match.url_name is None:
            return False
        own_pages = f"{self.opts.app_label}_{self.opts.model_name}_"
        if match.url_name.startswith(own_pages):
            return False
        # Still only for staff allowed to delete these rows.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)


def pretty_json(value: object) -> str:
    """A JSON value, indented, for a read-only field; "—" for none."""
    if value is None:
        return "—"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


def json_display(attname: str) -> Callable[[Any, Any], str]:
    """A read-only field (a method of the admin) showing the JSON in `attname`, indented."""

    @admin.display(description=attname)
    def display(model_admin: Any, obj: Any) -> str:
        return pretty_json(getattr(obj, attname))

    return display


# List filters


class LookupListFilter(admin.SimpleListFilter):
    """A list filter of fixed options. `options` are (value in the URL, label,
    the lookups that option filters by), in the order shown.
    """

    options: Sequence[tuple[str, str, Mapping[str, Any]]]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _ in self.options]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        for value, _, lookups in self.options:
            if self.value() == value:
                return queryset.filter(**lookups)
        return queryset


def null_filter(
    field: str, title: str, parameter_name: str, /, *, null: str, **labels: str
) -> type[LookupListFilter]:
    """A list filter on whether `field` is null: `labels` are its options
    (value in the URL=label) in the order shown; the value `null` means null,
    the others not null.
    """
    return type(
        f"{field.title().replace('_', '')}Filter",
        (LookupListFilter,),
        {
            "title": title,
            "parameter_name": parameter_name,
            "options": [
                (value, label, {f"{field}__isnull": value == null})
                for value, label in labels.items()
            ],
        },
    )


# Writes through the services


def as_form_error(error: InvalidInput) -> ValidationError:
    """A service's input error raised from a field's clean: on that field."""
    return ValidationError(error.message)


class ServiceValidatedForm(forms.ModelForm):
    """An admin form about an organization's row, whose rules are the services'.

    `validate(organization, data)` calls the services' own validators once the
    organization is known and the fields it reads (`validated_fields`) are
    clean; an `InvalidInput` they raise is shown on the field it names (else on
    the form), with the service's message: the form refuses what the service
    would, as it would.
    """

    validated_fields: ClassVar[Sequence[str]] = ()

    def organization(self) -> Any:
        """Chosen in the form, given by the inline's organization page, or the row's own."""
        chosen = self.cleaned_data.get("organization")
        if chosen is not None:
            return chosen
        return getattr(self.instance, "organization", None)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        organization = self.organization()
        if organization is not None and all(name in cleaned for name in self.validated_fields):
            with self.service_errors():
                self.validate(organization, cleaned)
        return cleaned

    def validate(self, organization: Any, data: dict[str, Any]) -> None:
        raise NotImplementedError

    @contextmanager
    def service_errors(self) -> Iterator[None]:
        """An `InvalidInput` raised inside becomes the form's error; the form goes on."""
        try:
            yield
        except InvalidInput as error:
            add_service_error(self, error)


def copy_into(target: Any, source: Any) -> None:
    """The admin goes on with its own instance (log entry, redirect): make it the saved row."""
    for field in type(source)._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
    target._state.db = source._state.db


class SavedThroughServicesMixin(_ModelAdminBase):
    """A row written by a service: `save_row` returns what the service saved
    (its many-to-many relations too), and the admin goes on with that.
    """

    def save_row(self, obj: Any, data: dict[str, Any], change: bool) -> Any:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        copy_into(obj, self.save_row(obj, form.cleaned_data, change))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # The service has set the many-to-many relations: no form.save_m2m().
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)  # type: ignore[attr-defined]


class SavedThroughServicesFormSet(BaseInlineFormSet):
    """An inline's rows written by the services: `create_row`, `update_row`
    and `delete_row` call them, at once (there is no saving them later).
    """

    def create_row(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def update_row(self, row: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def delete_row(self, row: Any) -> None:
        raise NotImplementedError

    def save_new(self, form: forms.ModelForm, commit: bool = True) -> Any:
        self._saved_at_once(commit)
        return self.create_row(form.cleaned_data)

    def save_existing(self, form: forms.ModelForm, obj: Any, commit: bool = True) -> Any:
        self._saved_at_once(commit)
        return self.update_row(obj, form.cleaned_data)

    def delete_existing(self, obj: Any, commit: bool = True) -> None:
        self._saved_at_once(commit)
        self.delete_row(obj)

    @staticmethod
    def _saved_at_once(commit: bool) -> None:
        if not commit:
            raise ValueError("These rows are saved by the services: save the formset with commit.")


class AddPageFieldsMixin(_ModelAdminBase):
    """The add page asks only for `add_fields`, all of them editable; the
    change page shows `fields`, `readonly_fields` among them read-only.
    """

    add_fields: ClassVar[Sequence[str]] = ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return self.add_fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return list(super().get_readonly_fields(request, obj))


class SecretShownOnceMixin(_ModelAdminBase):
    """Rows a service creates along with a secret it shows once (an API key, a
    webhook's signing secret): `create_with_secret` calls it, and the secret
    is said to the staff member who added the row. Changes save as usual.
    """

    secret_is: ClassVar[str]  # "The new API key is"

    def create_with_secret(self, obj: Any) -> tuple[models.Model, str]:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)  # type: ignore[misc]
            return
        created, secret = self.create_with_secret(obj)
        copy_into(obj, created)
        self.message_user(  # type: ignore[attr-defined]
            request,
            f"{self.secret_is} {secret} — copy it now: it is shown only this once.",
            messages.SUCCESS,
        )


# Pickers


class RelatedChoicesMixin(_ModelAdminBase):
    """Pickers of rows labelled with their own related rows (a member: with its
    user and organization) fetch those with the chosen rows, so that a picker
    costs one query however many are chosen. `choices_select_related` maps a
    picked model to the relations its label reads.
    """

    choices_select_related: ClassVar[Mapping[type[models.Model], Sequence[str]]] = {}

    def _labelled(self, db_field: models.Field[Any, Any], kwargs: dict[str, Any]) -> None:
        related = self.choices_select_related.get(db_field.related_model)  # type: ignore[arg-type]
        if related is not None and "queryset" not in kwargs:
            manager = db_field.related_model._default_manager  # type: ignore[union-attr]
            kwargs["queryset"] = manager.select_related(*related)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField | None:
        self._labelled(db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: ManyToManyField[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        self._labelled(db_field, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ChosenLabelsAutocomplete(AutocompleteSelectMultiple):
    """An autocomplete whose chosen options are labelled from `labels` when it
    knows them all, so that the rows of an inline share one query for their
    labels instead of one each. Else (a form shown again with other choices)
    it asks the database, as Django's does.
    """

    labels: dict[str, str] | None = None

    def optgroups(self, name: str, value: Any, attrs: Any = None) -> Any:
        chosen = [str(v) for v in value if str(v) not in self.choices.field.empty_values]
        if self.labels is None or not set(chosen) <= self.labels.keys():
            return super().optgroups(name, value, attrs)
        options = [
            self.create_option(name, pk, self.labels[pk], True, index)
            for index, pk in enumerate(chosen)
        ]
        return [(None, options, 0)]


# A lower app's page showing a higher app's rows

_inlines_on: dict[tuple[type[models.Model], type[models.Model]], Any] = {}


def inline_on(page: type[models.Model]) -> Callable[[_InlineT], _InlineT]:
    """Show the decorated inline on the admin page of `page`'s rows, where an
    `InlinesOnPageMixin` names its model.
    """

    def register(inline: _InlineT) -> _InlineT:
        _inlines_on[page, cast("type[Any]", inline).model] = inline
        return inline

    return register


class _InlinesOnPage:
    """`inlines`, read from what `inline_on` registered when asked (after Django
    has imported every app's admin), in the order of `inline_models`.
    """

    def __get__(
        self, model_admin: Any, owner: Any = None
    ) -> list[type[InlineModelAdmin[Any, Any]]]:
        if model_admin is None:
            return []  # the class has no model yet: ModelAdmin sets it per instance
        return [_inlines_on[model_admin.model, model] for model in model_admin.inline_models]


class InlinesOnPageMixin(_ModelAdminBase):
    """A page showing other apps' rows inline: an organization's alerts and
    limits on its page, whose admin (accounts) must not import theirs (alerts,
    billing). `inline_models` names them, in the order shown; each app's admin
    registers its inline with `@inline_on(...)`.
    """

    inline_models: ClassVar[Sequence[type[models.Model]]] = ()
    if TYPE_CHECKING:
        inlines: ClassVar[
            list[type[InlineModelAdmin[Any, Any]]] | tuple[type[InlineModelAdmin[Any, Any]], ...]
        ]
    else:
        inlines = _InlinesOnPage()
