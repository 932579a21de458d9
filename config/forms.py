"""Forms and the services behind them: a service's refusal shown on the
form, on the field it names. Imports no app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms

from config.errors import ServiceError


def add_service_error(form: forms.BaseForm, error: ServiceError) -> None:
    """Show a service's refusal on the field it names, or above the form."""
    form.add_error(error.field if error.field in form.fields else None, error.message)


def form_saved(form: forms.BaseForm, save: Callable[[dict[str, Any]], object]) -> bool:
    """Whether the form is valid and `save`, a service given its cleaned
    data, took it; a refusal of the service is shown on the form.
    """
    if not form.is_valid():
        return False
    try:
        save(form.cleaned_data)
    except ServiceError as error:
        add_service_error(form, error)
        return False
    return True
